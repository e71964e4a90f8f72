"""Search events from the front end, in the spirit of User Behavior Insights: every search response carries a
`query_id`; the front end posts what it showed (impressions) and what the user did (clicks) under that id.

Events are validated one by one (a 400 names the event and field) and stored in the state database (every
host behind a balancer adds to the same rows), bounded: beyond `max_events`, or once they take more than
`max_bytes`, the oldest are dropped, so neither a chatty front end nor a hostile one can fill the disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError
from sqlalchemy import Float, Text, delete, func, select
from sqlalchemy import Integer as IntegerColumn

from kb_service.state import StateDatabase, serial_key, table
from kb_service.validation import Integer, validated

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


def _not_a_flag(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("not_a_number", "expected seconds since the epoch")
    return value


class EventInput(BaseModel):
    """One event as the front end posts it (unknown fields are ignored)."""

    query_id: str = Field(min_length=1, max_length=MAX_ID, pattern="\\S")
    query: str | None = Field(None, max_length=MAX_TEXT, description="the query text (on impressions)")
    kid: str = Field(min_length=1, max_length=MAX_ID, pattern="\\S")
    position: Integer = Field(ge=1, le=10_000, description="the 1-based rank the hit was shown at")
    action: Action
    timestamp: Annotated[float | None, BeforeValidator(_not_a_flag)] = Field(
        None, ge=0, le=LATEST_TIMESTAMP, description="seconds since the epoch (default now)")


class EventsBody(BaseModel):
    """A POST /v1/events body: stored whole, or refused whole naming the first bad event."""

    events: list[EventInput] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


def parse_events(body: object) -> list[SearchEvent]:
    """A POST /events body: {"events": [...]}, a list of events or a single event object."""
    if isinstance(body, list) or (isinstance(body, dict) and "events" not in body):
        body = {"events": body if isinstance(body, list) else [body]}
    parsed = validated(EventsBody, body)
    now = time.time()
    return [SearchEvent(e.query_id, e.query or "", e.kid, e.position, e.action,
                        now if e.timestamp is None else float(e.timestamp)) for e in parsed.events]


events = table("events", serial_key(), query_id=Text, query=Text, kid=Text, position=IntegerColumn, action=Text,
               timestamp=Float)


class EventStore:
    """Events in the state database, at most `max_events` kept and at most `max_bytes` used (oldest dropped
    first; the space they held is reused, so the store stays near that size)."""

    def __init__(self, state: StateDatabase, max_events: int = 1_000_000, max_bytes: int = 256 * 2**20):
        self.state = state
        self.max_events = max_events
        self.max_bytes = max_bytes

    def add(self, batch: list[SearchEvent]) -> int:
        engine = self.state.ready(events)
        with engine.begin() as connection:
            connection.execute(events.insert(), [
                {"query_id": e.query_id, "query": e.query, "kid": e.kid, "position": e.position,
                 "action": e.action.value, "timestamp": e.timestamp} for e in batch])
            newest = select(func.max(events.c.id)).scalar_subquery()
            connection.execute(delete(events).where(events.c.id <= newest - self.max_events))
        while self.used_bytes() > self.max_bytes:  # drop the oldest tenth until the rows fit
            with engine.begin() as connection:
                oldest = connection.execute(select(func.min(events.c.id), func.count())).one()
                if not oldest[1]:  # other tables fill a shared SQLite file: nothing of ours left to drop
                    break
                connection.execute(delete(events).where(events.c.id <= oldest[0] + oldest[1] // 10))
        return len(batch)

    def used_bytes(self) -> int:
        return self.state.bytes_used(events, events.c.id.desc())

    def all(self) -> list[SearchEvent]:
        with self.state.ready(events).connect() as connection:
            rows = connection.execute(select(events.c.query_id, events.c.query, events.c.kid, events.c.position,
                                             events.c.action, events.c.timestamp).order_by(events.c.id)).all()
        return [SearchEvent(q, text, kid, position, Action(action), ts) for q, text, kid, position, action, ts in rows]

    def clicks_by_kid(self, limit: int) -> dict[str, int]:
        """The `limit` most clicked kids and their clicks: what users chose, for type-ahead's popularity."""
        clicks = func.count().label("clicks")
        with self.state.ready(events).connect() as connection:
            rows = connection.execute(select(events.c.kid, clicks).where(events.c.action == Action.CLICK.value)
                                      .group_by(events.c.kid).order_by(clicks.desc()).limit(limit)).all()
        return dict(rows)

    def count(self) -> int:
        with self.state.ready(events).connect() as connection:
            return connection.execute(select(func.count()).select_from(events)).scalar_one()
