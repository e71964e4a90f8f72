"""Judgment lists from people: a grade 0–3 per (query, kid), rated in the console, kept with who rated it,
when, and which config and index version produced the hit; exported as TREC qrels for `kb eval` and
`kb tune`, imported from them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import Float, Text, func, select
from sqlalchemy import Integer as IntegerColumn

from kb_service.errors import InputError
from kb_service.evaluation import read_qrels, read_queries, write_judgments
from kb_service.state import StateDatabase, serial_key, table
from kb_service.validation import Integer

GRADES = range(0, 4)
MAX_QUERY = 2000
MAX_KID = 512


class JudgmentInput(BaseModel):
    """A rating as the console posts it."""

    query: str = Field(min_length=1, max_length=MAX_QUERY, pattern="\\S")
    kid: str = Field(min_length=1, max_length=MAX_KID, pattern="\\S")
    grade: Integer = Field(ge=GRADES.start, le=GRADES.stop - 1,
                           description="0 not relevant … 3 exactly what was asked")


@dataclass(frozen=True)
class Rating:
    query: str
    kid: str
    grade: int
    rater: str
    rated_at: float
    config_version: str = ""
    index_version: str = ""


JUDGED = "judged"  # the task (and qid prefix) of ratings people gave in the console


ratings = table("ratings", serial_key(), query=Text, kid=Text, grade=IntegerColumn, rater=Text, rated_at=Float,
                config_version=Text, index_version=Text)
RATING_COLUMNS = tuple(column.name for column in ratings.columns if column.name != "id")


class JudgmentStore:
    """Ratings in the state database; the latest rating of a (query, kid) is its judgment."""

    def __init__(self, state: StateDatabase):
        self.state = state

    def rate(self, rating: Rating) -> None:
        if rating.grade not in GRADES:
            raise InputError("expected a grade from 0 (not relevant) to 3 (exactly what was asked)", "grade")
        if not rating.query.strip() or not rating.kid.strip():
            raise InputError("expected the query and the kid rated", "query" if not rating.query.strip() else "kid")
        with self.state.ready(ratings).begin() as connection:
            connection.execute(ratings.insert().values({name: getattr(rating, name) for name in RATING_COLUMNS}))

    def judgments(self) -> list[Rating]:
        """The latest rating of every (query, kid)."""
        latest = select(func.max(ratings.c.id)).group_by(ratings.c.query, ratings.c.kid)
        with self.state.ready(ratings).connect() as connection:
            rows = connection.execute(select(*(ratings.c[name] for name in RATING_COLUMNS))
                                      .where(ratings.c.id.in_(latest)).order_by(ratings.c.query, ratings.c.kid))
            return [Rating(*row) for row in rows]

    def export(self, qrels: Path, queries: Path | None = None) -> int:
        judged = self.judgments()
        write_judgments(qrels, queries, [(r.query, r.kid, r.grade) for r in judged], JUDGED)
        return len(judged)

    def import_qrels(self, qrels: Path, queries: Path, rater: str) -> int:
        """Ratings from TREC qrels whose qids the queries file maps to texts; a line that does not parse, or
        a qid the queries file does not name, is an error naming the file (and line)."""
        texts = {q.qid: q.text for q in read_queries(queries)}
        graded = read_qrels(qrels)
        unknown = sorted(set(graded) - set(texts))
        if unknown:
            raise InputError(f"{qrels}: qid {unknown[0]} is not in {queries}", "qrels")
        count = 0
        for qid, grades in graded.items():
            for kid, grade in grades.items():
                try:
                    self.rate(Rating(texts[qid], kid, grade, rater, time.time()))
                except InputError as err:
                    raise InputError(f"{qrels}: {qid} {kid}: {err.message}", "qrels") from None
                count += 1
        return count

