"""What users ask that the service understands poorly: a bounded tally of recent queries with no linked
entity, no linked attribute, no results, or a low top score, for the console's insight view. Analysts read it
to find names and wordings to add to the KB or the synonym lists.

Kept in the state database, so every worker and every host adds to one tally. A search never waits for it:
`record` puts the search's outcome on a bounded in-process queue and returns; a thread writes the queue in
batches (one upsert per distinct query), and when the queue is full the outcome is dropped and counted
(`kb_query_log_dropped_total`), so a slow or absent database costs the tally, never search latency.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Column, Float, Integer, MetaData, Table, Text, delete, select
from sqlalchemy.exc import SQLAlchemyError

from kb_service import metrics
from kb_service.serving.service import SearchResponse
from kb_service.state import StateDatabase

PROBLEMS = ("no entity", "no attribute", "no results", "low top score")
_COLUMNS = ("no_entity", "no_attribute", "no_results", "low_top_score")
TRIM_EVERY = 500  # searches between trims of the tally down to its capacity
BATCH = 500  # outcomes written per transaction at most
FLUSH_S = 1.0  # an outcome waits at most this long for its batch

log = logging.getLogger(__name__)
queries = Table(
    "queries", MetaData(),
    Column("query", Text, primary_key=True),
    Column("searches", Integer),
    Column("top_score", Float),
    Column("seen", Float, index=True),
    *(Column(name, Integer, server_default="0") for name in _COLUMNS),
)


@dataclass
class QueryTally:
    searches: int = 0
    problems: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEMS, 0))
    top_score: float = 0.0


@dataclass(frozen=True)
class _Outcome:
    query: str
    top_score: float
    seen: float
    problems: tuple[int, int, int, int]


class QueryLog:
    """The last `capacity` distinct queries (normalised) with how often each had each problem."""

    def __init__(self, state: StateDatabase, capacity: int = 10_000, low_score: float = 1.0,
                 queue_size: int = 10_000):
        self.state = state
        self.capacity = capacity
        self.low_score = low_score
        self._queue: queue.Queue[_Outcome] = queue.Queue(maxsize=queue_size)
        self._written = 0
        self._writer = threading.Thread(target=self._write_batches, name="kb-query-log", daemon=True)
        self._writer.start()

    def record(self, response: SearchResponse) -> None:
        """Queues the search's outcome without waiting; a full queue drops it (counted)."""
        parsed = response.parsed
        top = response.hits[0].score if response.hits else 0.0
        problems = (not parsed.confident_entities(), not parsed.confident_attributes(), not response.hits,
                    bool(response.hits) and top < self.low_score)
        try:
            self._queue.put_nowait(_Outcome(parsed.normalised, top, time.time(),
                                            tuple(map(int, problems))))  # type: ignore[arg-type]
        except queue.Full:
            metrics.QUERY_LOG_DROPPED.inc()

    def flush(self, timeout_s: float = 10.0) -> None:
        """Waits until every outcome queued so far is written (or `timeout_s` passes): a draining worker
        and the tests call it."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _write_batches(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + FLUSH_S
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except SQLAlchemyError as err:
                metrics.QUERY_LOG_FAILED.inc()
                log.warning("query log: %d searches not tallied (%s)", len(batch), type(err).__name__)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _write(self, batch: list[_Outcome]) -> None:
        merged: dict[str, dict] = {}
        counts = Counter(outcome.query for outcome in batch)
        for outcome in batch:  # the latest outcome of a query gives its top score; problems add up
            row = merged.setdefault(outcome.query, {"query": outcome.query, "searches": counts[outcome.query],
                                                    **dict.fromkeys(_COLUMNS, 0)})
            row.update(top_score=outcome.top_score, seen=outcome.seen)
            for name, flag in zip(_COLUMNS, outcome.problems, strict=True):
                row[name] += flag
        engine = self.state.ready(queries)
        statement = self.state.upsert(queries, list(merged.values()), ("query",), lambda new: {
            "searches": queries.c.searches + new.searches, "top_score": new.top_score, "seen": new.seen,
            **{name: queries.c[name] + new[name] for name in _COLUMNS}})
        with engine.begin() as connection:
            connection.execute(statement)
        self._written += len(batch)
        if self._written >= TRIM_EVERY:
            self._written = 0
            with engine.begin() as connection:
                threshold = connection.execute(select(queries.c.seen).order_by(queries.c.seen.desc())
                                               .offset(self.capacity).limit(1)).scalar()
                if threshold is not None:
                    connection.execute(delete(queries).where(queries.c.seen <= threshold))

    def searches(self) -> dict[str, int]:
        """How often each logged (normalised) query was searched: type-ahead's popularity by what users ask."""
        with self.state.ready(queries).connect() as connection:
            return dict(connection.execute(select(queries.c.query, queries.c.searches)).all())

    def frequent(self, problem: str, limit: int = 20) -> list[tuple[str, QueryTally]]:
        """The queries that had `problem` most often, most frequent first."""
        column = queries.c[_COLUMNS[PROBLEMS.index(problem)]]
        with self.state.ready(queries).connect() as connection:
            rows = connection.execute(select(queries.c.query, queries.c.searches, queries.c.top_score,
                                             *(queries.c[name] for name in _COLUMNS))
                                      .where(column > 0).order_by(column.desc(), queries.c.query).limit(limit)).all()
        return [(query, QueryTally(searches, dict(zip(PROBLEMS, counts, strict=True)), top_score))
                for query, searches, top_score, *counts in rows]
