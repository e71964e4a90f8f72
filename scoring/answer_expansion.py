"""Answer expansion: a linked answer whose value names other KB entities (哥伦比亚 / 首都: 波哥大 (Bogota))
brings those entities' records in, right after the records of the answer's own source: the question was
about them too (what is the capital → the capital). One hop, through the engine that served the query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from scoring.hits import ScoredHit
from scoring.plan import Clause, Mode, SearchPlan
from scoring.rescoring import RescoreContext, answers_question, source_of

PLACEMENT_STEP = 1e-4  # expansion hits sit this far apart below the answer's source, in the engine's order
NAMESAKES_FETCHED = 4  # a named entity's records are fetched for up to this many namesakes (伦敦: UK, Canada, …)


@dataclass(frozen=True)
class AnswerExpansion:
    enabled: bool = True
    max_entities: int = 2
    records_per_entity: int = 6

    def __post_init__(self):
        if self.max_entities < 1 or self.records_per_entity < 1:
            raise ValueError("max_entities and records_per_entity must be >= 1")


def expansion_plan(plan: SearchPlan, spellings: tuple[str, ...], size: int) -> SearchPlan:
    """The query's plan restricted to one entity's records (any stored spelling), scored by the same formula.
    Fast mode: when the entity has no more records than `candidates`, every one of them is a candidate, so
    the result is exact's."""
    return replace(plan, required_any=tuple(Clause("answer_entity", "term", "knowledge", s, 1.0) for s in spellings),
                   should=(), mode=Mode.FAST, size=size, offset=0, candidates=max(plan.candidates, size), window=size)


def expand_answer(hits: list[ScoredHit], context: RescoreContext, settings: AnswerExpansion, plan: SearchPlan,
                  entities_named_in: Callable[[str], list[tuple[str, ...]]],
                  execute: Callable[[SearchPlan], list[ScoredHit]]) -> tuple[list[ScoredHit], int]:
    """`hits` ranked; returns them with the named entities' records placed (records already ranked above
    their place stay where they are), and how many records were not among `hits` before."""
    if not settings.enabled:
        return hits, 0
    answer = next((hit for hit in hits if answers_question(hit.record, context)), None)
    if answer is None:
        return hits, 0
    own = {answer.record.knowledge}
    named = [spellings for spellings in entities_named_in(answer.record.value) if own.isdisjoint(spellings)]
    ranked = {hit.record.kid: hit for hit in hits}
    source = [hit.score for hit in hits if answer.record.ref and hit.record.ref == answer.record.ref]
    target = min(source or [answer.score])
    placed: list[ScoredHit] = []
    for spellings in named[:settings.max_entities]:
        found = execute(expansion_plan(plan, spellings, settings.records_per_entity * NAMESAKES_FETCHED))
        for namesake in _namesakes_naming_first(found, answer.record.knowledge):
            for record_hit in namesake[:settings.records_per_entity]:
                hit = ranked.setdefault(record_hit.record.kid, record_hit)
                target -= PLACEMENT_STEP
                if hit.score < target:
                    hit.shift_to("rescore", "answer_expansion", target)
                    placed.append(hit)
    added = len(ranked) - len(hits)
    if not placed and not added:
        return hits, 0
    return sorted(ranked.values(), key=lambda h: (-h.score, h.record.kid)), added


def _namesakes_naming_first(found: list[ScoredHit], own: str) -> list[list[ScoredHit]]:
    """`found` split by source (`ref`), in engine order, except that the namesakes whose records name the
    answer's own entity come first: 英国's capital 伦敦 is the one whose 国家 is 英国, not London, Ontario."""
    sources: dict[str, list[ScoredHit]] = {}
    for hit in found:
        sources.setdefault(source_of(hit.record), []).append(hit)
    return sorted(sources.values(), key=lambda hits: not any(own in hit.record.value for hit in hits))
