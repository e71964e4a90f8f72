"""Understanding that learns from use: proposals mined from what users click, approved by an analyst, built
into the next version.

The click model (feedback/click_model.py) grades each (query, record) pair users were shown often enough,
free of position bias. Two misses show up in those grades:

- a *phrasing*: the query linked its entity, but the record users found relevant answers an attribute the
  understander did not pick (a wording no list holds: X这几个字怎么念 → 读音). The question part (the query
  without the entity) is proposed as an example of that attribute once it has led to it for several
  different entities, and almost never to another attribute;
- an *alias*: the query linked no entity, and the relevant records all belong to one entity. The query,
  without the attribute words it linked, is proposed as another name of that entity.

Proposals wait in the state database with their evidence (queries, clicks, the click model's grade) until an
analyst approves or rejects them (`kb suggest-understanding`); approved ones are read when the next version
is built and stored with it, so a rollback takes them back too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Column, Float, Text, select, update
from sqlalchemy.exc import SQLAlchemyError

from kb_service.errors import InputError
from kb_service.feedback.click_model import Judgment
from kb_service.records import KnowledgeRecord
from kb_service.runtime import Runtime
from kb_service.state import StateDatabase, StateDatabaseError, state_url, table
from query_understanding.normalise import normalise_text
from query_understanding.parsed_query import ParsedQuery

PHRASING, ALIAS = "phrasing", "alias"
STATUSES = ("pending", "approved", "rejected")
TOP_GRADE = 3  # the click model's grade of the records users found most attractive for a query
MIN_CLICKS = 2  # clicks on that record before it stands for what the query's users wanted
MAX_EXAMPLES = 5  # queries kept as a proposal's evidence
MAX_PHRASE_CHARS = 64  # a longer question part is a sentence, not a phrasing to learn

proposals = table("understanding_proposals", Column("id", Text, primary_key=True), Column("reviewer", Text),
                  Column("decided_at", Float), kind=Text, text=Text, target=Text, evidence=Text, status=Text,
                  mined_at=Float)


@dataclass(frozen=True)
class Proposal:
    """`text` proposed as a phrasing of attribute `target`, or as an alias of entity `target`."""

    kind: str
    text: str
    target: str
    queries: int  # distinct queries (for a phrasing: distinct entities) behind it
    clicks: int
    grade: float  # mean click-model grade of the records it led to
    examples: tuple[str, ...] = ()
    status: str = "pending"

    @property
    def id(self) -> str:
        return hashlib.sha1(f"{self.kind}\0{self.text}\0{self.target}".encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Learned:
    """What approved proposals add to a version's understanding."""

    phrasings: dict[str, tuple[str, ...]] = field(default_factory=dict)  # attribute -> example questions
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> entity


def mine(judgments: Iterable[Judgment], understand: Callable[[str], ParsedQuery],
         record_of: Callable[[str], KnowledgeRecord | None], min_queries: int = 3, min_share: float = 0.8
         ) -> list[Proposal]:
    """Proposals from graded (query, record) pairs. Each query stands for the record its users found most
    attractive (the click model's top grade, clicked at least `MIN_CLICKS` times); a phrasing needs that
    to hold for `min_queries` different entities and an alias for `min_queries` clicks, each with at least
    `min_share` of the queries behind its text pointing at one target."""
    best: dict[str, Judgment] = {}
    for judgment in judgments:
        kept = best.get(judgment.query)
        if judgment.grade == TOP_GRADE and judgment.clicks >= MIN_CLICKS and (
                kept is None or (judgment.attractiveness, judgment.clicks) > (kept.attractiveness, kept.clicks)):
            best[judgment.query] = judgment
    evidence: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for query, judgment in best.items():
        record = record_of(judgment.kid)
        if record is None:
            continue
        parsed = understand(query)
        named = [e for e in parsed.entities if normalise_text(e.name) == normalise_text(record.knowledge)]
        if named:  # the entity was found, confidently or not: what the rest asks for is to learn
            linked = parsed.confident_attributes()
            question = _without(parsed.normalised, named[:1])
            if question and len(question) <= MAX_PHRASE_CHARS and (not linked or linked[0].name != record.attribute):
                evidence[PHRASING, question][record.attribute].append((record.knowledge, judgment))
        elif not parsed.confident_entities():
            alias = _without(parsed.normalised, parsed.confident_attributes())
            if alias and len(alias) <= MAX_PHRASE_CHARS:
                evidence[ALIAS, alias][record.knowledge].append((query, judgment))
    mined = []
    for (kind, text), targets in evidence.items():
        total = sum(len(rows) for rows in targets.values())
        target, rows = max(targets.items(), key=lambda item: len(item[1]))
        support = len({key for key, _ in rows}) if kind == PHRASING else sum(j.clicks for _, j in rows)
        if support >= min_queries and len(rows) >= min_share * total:
            judged = [j for _, j in rows]
            mined.append(Proposal(kind, text, target, len({j.query for j in judged}), sum(j.clicks for j in judged),
                                  round(sum(j.grade for j in judged) / len(judged), 2),
                                  tuple(sorted({j.query for j in judged})[:MAX_EXAMPLES])))
    return sorted(mined, key=lambda p: (p.kind, -p.queries, p.text))


def _without(text: str, spans) -> str:
    """`text` with the spans taken out and its spaces collapsed: what is left to learn."""
    kept, position = [], 0
    for span in sorted(spans, key=lambda s: s.start):
        kept.append(text[position:span.start])
        position = max(position, span.end)
    kept.append(text[position:])
    return " ".join("".join(kept).split())


class ProposalStore:
    """Proposals in the state database; mining again refreshes a pending proposal's evidence and never
    reopens one an analyst has decided."""

    def __init__(self, state: StateDatabase):
        self.state = state

    def save(self, mined: list[Proposal]) -> int:
        """Stores newly mined proposals; returns how many are new or still pending."""
        if not mined:
            return 0
        now = time.time()
        with self.state.ready(proposals).begin() as connection:
            decided = set(connection.execute(select(proposals.c.id).where(
                proposals.c.id.in_([p.id for p in mined]), proposals.c.status != "pending")).scalars())
            rows = [{"id": p.id, "kind": p.kind, "text": p.text, "target": p.target, "status": "pending",
                     "evidence": json.dumps({"queries": p.queries, "clicks": p.clicks, "grade": p.grade,
                                             "examples": list(p.examples)}, ensure_ascii=False),
                     "mined_at": now} for p in mined if p.id not in decided]
            if rows:
                connection.execute(self.state.upsert(proposals, rows, ("id",), lambda new: {
                    "evidence": new.evidence, "mined_at": new.mined_at}))
        return len(rows)

    def list(self, status: str | None = None) -> list[Proposal]:
        query = select(proposals).order_by(proposals.c.kind, proposals.c.target, proposals.c.text)
        if status is not None:
            query = query.where(proposals.c.status == status)
        with self.state.ready(proposals).connect() as connection:
            rows = connection.execute(query).mappings().all()
        found = []
        for row in rows:
            evidence = json.loads(row["evidence"])
            found.append(Proposal(row["kind"], row["text"], row["target"], evidence["queries"], evidence["clicks"],
                                  evidence["grade"], tuple(evidence["examples"]), row["status"]))
        return found

    def decide(self, ids: Sequence[str], status: str, reviewer: str) -> int:
        """Approves or rejects the proposals named by id; an unknown id is the caller's input error."""
        if status not in STATUSES[1:]:
            raise InputError(f"expected one of {', '.join(STATUSES[1:])}", "status")
        if not reviewer.strip():
            raise InputError("name who decided", "reviewer")
        with self.state.ready(proposals).begin() as connection:
            known = set(connection.execute(select(proposals.c.id).where(proposals.c.id.in_(ids))).scalars())
            unknown: list[str] = sorted(set(ids) - known)
            if unknown:
                raise InputError(f"no proposal with id {', '.join(unknown)}", "id")
            return connection.execute(update(proposals).where(proposals.c.id.in_(ids)).values(
                status=status, reviewer=reviewer, decided_at=time.time())).rowcount

    def learned(self) -> Learned:
        """The approved proposals, as what the next version's understanding adds; a state database that
        cannot be read stops the build (one line naming the setting) rather than drop what was approved."""
        phrasings: dict[str, list[str]] = defaultdict(list)
        aliases = {}
        try:
            approved = self.list("approved")
        except SQLAlchemyError as err:
            raise StateDatabaseError(f"cannot read the approved understanding proposals: {str(err).splitlines()[0]}",
                                     "state.database") from None
        for proposal in approved:
            if proposal.kind == PHRASING:
                phrasings[proposal.target].append(proposal.text)
            else:
                aliases[proposal.text] = proposal.target
        return Learned({a: tuple(texts) for a, texts in phrasings.items()}, aliases)


def approved_learning(runtime: Runtime) -> Learned:
    """What a version build adds from approved proposals. With the default SQLite state and no proposals
    file yet there is nothing approved, and the build creates no file; a SQLite file read is let go at once,
    so a build leaves no handle open in the data directory."""
    url = state_url(runtime.config, "proposals")
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        return Learned()
    state = runtime.state("proposals")
    try:
        return ProposalStore(state).learned()
    finally:
        if state.is_sqlite:
            state.dispose()
