"""Search events from the front end, in the spirit of User Behavior Insights: every search response carries a
`query_id`; the front end posts what it showed (impressions) and what the user did (clicks) under that id.

Events are validated one by one (a 400 names the event and field) and stored in SQLite in the data
directory, bounded: beyond `max_events`, or once the file's pages hold more than `max_bytes`, the oldest are
dropped, so neither a chatty front end nor a hostile one can fill the disk.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from kb_service.errors import InputError
from kb_service.feedback.sqlite import open_database

MAX_EVENTS_PER_REQUEST = 1000
MAX_TEXT = 2000
MAX_ID = 256  # query ids and kids are identifiers, not text
LATEST_TIMESTAMP = 4_102_444_800  # 2100-01-01: an event stamped later is a mistake or a forgery


class Action(StrEnum):
    IMPRESSION = "impression"  # the hit was shown at `position`
    CLICK = "click"  # the user opened it


@dataclass(frozen=True)
class SearchEvent:
    query_id: str
    query: str
    kid: str
    position: int
    action: Action
    timestamp: float

    @classmethod
    def parse(cls, raw: object, index: int) -> SearchEvent:
        """One event of a POST /events body; `index` names it in errors (events[3].position)."""
        where = f"events[{index}]"
        if not isinstance(raw, dict):
            raise InputError("expected an object", where)

        def text(name: str, limit: int, required: bool = True) -> str:
            value = raw.get(name, "")
            if not isinstance(value, str) or (required and not value) or len(value) > limit:
                raise InputError(f"expected a non-empty string of at most {limit} characters", f"{where}.{name}")
            return value

        position = raw.get("position")
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= 10_000:
            raise InputError("expected the 1-based rank the hit was shown at (1 to 10000)", f"{where}.position")
        try:
            action = Action(raw.get("action"))
        except ValueError:
            raise InputError(f"expected one of {', '.join(Action)}", f"{where}.action") from None
        timestamp = raw.get("timestamp", time.time())
        if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not (
                0 <= timestamp <= LATEST_TIMESTAMP):
            raise InputError("expected seconds since the epoch (before 2100)", f"{where}.timestamp")
        return cls(text("query_id", MAX_ID), text("query", MAX_TEXT, required=False), text("kid", MAX_ID), position,
                   action, float(timestamp))


def parse_events(body: object) -> list[SearchEvent]:
    """A POST /events body: {"events": [...]} or a single event object."""
    if isinstance(body, dict) and "events" in body:
        body = body["events"]
    events = body if isinstance(body, list) else [body]
    if not events or len(events) > MAX_EVENTS_PER_REQUEST:
        raise InputError(f"expected 1 to {MAX_EVENTS_PER_REQUEST} events", "events")
    return [SearchEvent.parse(raw, i) for i, raw in enumerate(events)]


class EventStore:
    """Events in `path` (SQLite), at most `max_events` kept and at most `max_bytes` of pages used (oldest
    dropped first; SQLite reuses the freed pages, so the file stays near that size)."""

    def __init__(self, path: Path, max_events: int = 1_000_000, max_bytes: int = 256 * 2**20):
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = open_database(path, "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, query_id TEXT "
                                       "NOT NULL, query TEXT NOT NULL, kid TEXT NOT NULL, position INTEGER NOT NULL, "
                                       "action TEXT NOT NULL, timestamp REAL NOT NULL)")

    def add(self, events: list[SearchEvent]) -> int:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO events (query_id, query, kid, position, action, timestamp) VALUES (?, ?, ?, ?, ?, ?)",
                [(e.query_id, e.query, e.kid, e.position, e.action.value, e.timestamp) for e in events])
            self._db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (self.max_events,))
            while self.used_bytes() > self.max_bytes:  # drop the oldest tenth until the pages fit
                self._db.execute("DELETE FROM events WHERE id <= (SELECT MIN(id) FROM events) + "
                                 "(SELECT COUNT(*) FROM events) / 10")
        return len(events)

    def used_bytes(self) -> int:
        """The bytes of the file's pages that hold data (free pages, which SQLite reuses, not counted)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0] - self._db.execute("PRAGMA freelist_count"
                                                                                        ).fetchone()[0]
        return pages * self._db.execute("PRAGMA page_size").fetchone()[0]

    def all(self) -> list[SearchEvent]:
        with self._lock:
            rows = self._db.execute("SELECT query_id, query, kid, position, action, timestamp FROM events "
                                    "ORDER BY id").fetchall()
        return [SearchEvent(q, text, kid, position, Action(action), ts) for q, text, kid, position, action, ts in rows]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def close(self) -> None:
        self._db.close()
