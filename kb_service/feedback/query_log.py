"""What users ask that the service understands poorly: a bounded tally of recent queries with no linked
entity, no linked attribute, no results, or a low top score, for the console's insight view. Analysts read it
to find names and wordings to add to the KB or the synonym lists.

Kept in SQLite in the data directory, so every worker process of a server adds to one tally and the insight
page shows all of them, whichever worker answers it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kb_service.feedback.sqlite import open_database
from kb_service.serving.service import SearchResponse

PROBLEMS = ("no entity", "no attribute", "no results", "low top score")
_COLUMNS = ("no_entity", "no_attribute", "no_results", "low_top_score")
TRIM_EVERY = 500  # searches between trims of the tally down to its capacity


@dataclass
class QueryTally:
    searches: int = 0
    problems: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBLEMS, 0))
    top_score: float = 0.0


class QueryLog:
    """The last `capacity` distinct queries (normalised) with how often each had each problem."""

    def __init__(self, path: Path, capacity: int = 10_000, low_score: float = 1.0):
        self.capacity = capacity
        self.low_score = low_score
        self._db = open_database(path, "CREATE TABLE IF NOT EXISTS queries (query TEXT PRIMARY KEY, searches "
                                 "INTEGER, top_score REAL, seen REAL, "
                                 + ", ".join(f"{c} INTEGER DEFAULT 0" for c in _COLUMNS) + ")")
        self._db.execute("CREATE INDEX IF NOT EXISTS queries_seen ON queries (seen)")
        self._db.execute("PRAGMA synchronous=OFF")  # a lost tally after a crash is harmless; speed is not
        self._lock = threading.Lock()
        self._recorded = 0

    def record(self, response: SearchResponse) -> None:
        parsed = response.parsed
        top = response.hits[0].score if response.hits else 0.0
        seen = (not parsed.confident_entities(), not parsed.confident_attributes(), not response.hits,
                bool(response.hits) and top < self.low_score)
        with self._lock, self._db:
            self._db.execute(
                f"INSERT INTO queries (query, searches, top_score, seen, {', '.join(_COLUMNS)}) "
                f"VALUES (?, 1, ?, ?, ?, ?, ?, ?) ON CONFLICT (query) DO UPDATE SET searches = searches + 1, "
                "top_score = excluded.top_score, seen = excluded.seen, "
                + ", ".join(f"{c} = {c} + excluded.{c}" for c in _COLUMNS),
                (parsed.normalised, top, time.time(), *map(int, seen)))
            self._recorded += 1
            if self._recorded % TRIM_EVERY == 0:
                self._db.execute("DELETE FROM queries WHERE query IN (SELECT query FROM queries ORDER BY seen DESC "
                                 "LIMIT -1 OFFSET ?)", (self.capacity,))

    def frequent(self, problem: str, limit: int = 20) -> list[tuple[str, QueryTally]]:
        """The queries that had `problem` most often, most frequent first."""
        column = _COLUMNS[PROBLEMS.index(problem)]
        with self._lock:
            rows = self._db.execute(f"SELECT query, searches, top_score, {', '.join(_COLUMNS)} FROM queries "
                                    f"WHERE {column} > 0 ORDER BY {column} DESC, query LIMIT ?", (limit,)).fetchall()
        return [(query, QueryTally(searches, dict(zip(PROBLEMS, counts, strict=True)), top_score))
                for query, searches, top_score, *counts in rows]
