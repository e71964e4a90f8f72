"""The persistent history of reload jobs, and the snapshot of what the last switched reload served.

Rows in the state database: the CLI, the API and the scheduler of every process, and with a shared
`state.database` every host, read and write the same history; each run names the instance that ran it. A run
left `running` by a killed process is marked `crashed` by that instance's next reload, which holds the reload
lock and so knows none of its own is running.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from sqlalchemy import Column, Float, Integer, MetaData, Table, Text, delete, inspect, select, text, update

from kb_service.records import now_timestamp
from kb_service.state import StateDatabase

metadata = MetaData()
reload_runs = Table(
    "reload_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("trigger", Text, nullable=False),
    Column("started", Text, nullable=False),
    Column("ended", Text),
    Column("status", Text, nullable=False),
    Column("version", Text),
    Column("counts", Text, nullable=False, server_default="{}"),
    Column("gates", Text, nullable=False, server_default="[]"),
    Column("duration_s", Float),
    Column("message", Text, nullable=False, server_default=""),
    Column("instance", Text, nullable=False, server_default=""),
)
SNAPSHOT_CHUNK = 500  # kids per DELETE … IN (…), under every database's limit on bound parameters
served_snapshot = Table(
    "served_snapshot", metadata,
    Column("kid", Text, primary_key=True),
    Column("content", Text, nullable=False),
)


class RunStatus(StrEnum):
    """A reload run's outcome; `running` until it ends, `crashed` when its process died mid-way."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    REFUSED = "refused"
    FAILED = "failed"
    CRASHED = "crashed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    detail: str


@dataclass
class ReloadCounts:
    records: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    merged: int = 0
    rejected: int = 0
    expired: int = 0
    encoded: int = 0
    reused: int = 0


@dataclass
class ReloadRun:
    id: int
    trigger: str
    started: str
    status: RunStatus
    ended: str | None = None
    version: str | None = None
    counts: ReloadCounts = field(default_factory=ReloadCounts)
    gates: list[GateResult] = field(default_factory=list)
    duration_s: float | None = None
    message: str = ""
    instance: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _name_instances(connection) -> None:
    """A history written before runs named their instance gains the column (its runs name none)."""
    if "instance" not in {c["name"] for c in inspect(connection).get_columns("reload_runs")}:
        connection.execute(text("ALTER TABLE reload_runs ADD COLUMN instance TEXT NOT NULL DEFAULT ''"))


class ReloadHistory:
    def __init__(self, state: StateDatabase, instance: str):
        self.state = state
        self.instance = instance
        self.engine = state.ready(reload_runs, served_snapshot, upgrade=_name_instances)

    def start(self, trigger: str) -> ReloadRun:
        started = now_timestamp()
        with self.engine.begin() as connection:
            run_id = connection.execute(reload_runs.insert().values(
                trigger=trigger, started=started, status=RunStatus.RUNNING.value, instance=self.instance)
                .returning(reload_runs.c.id)).scalar_one()
        return ReloadRun(run_id, trigger, started, RunStatus.RUNNING, instance=self.instance)

    def finish(self, run: ReloadRun) -> None:
        run.ended = now_timestamp()
        with self.engine.begin() as connection:
            connection.execute(update(reload_runs).where(reload_runs.c.id == run.id).values(
                ended=run.ended, status=run.status.value, version=run.version, counts=json.dumps(asdict(run.counts)),
                gates=json.dumps([asdict(g) for g in run.gates], ensure_ascii=False), duration_s=run.duration_s,
                message=run.message))

    def mark_crashed(self) -> int:
        """This instance's runs still `running` while it holds the reload lock were killed mid-way."""
        with self.engine.begin() as connection:
            return connection.execute(update(reload_runs).where(
                reload_runs.c.status == RunStatus.RUNNING.value, reload_runs.c.instance == self.instance)
                .values(status=RunStatus.CRASHED.value, message="the process running it died")).rowcount

    def runs(self, limit: int = 20) -> list[ReloadRun]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(
                reload_runs.c.id, reload_runs.c.trigger, reload_runs.c.started, reload_runs.c.status,
                reload_runs.c.ended, reload_runs.c.version, reload_runs.c.counts, reload_runs.c.gates,
                reload_runs.c.duration_s, reload_runs.c.message, reload_runs.c.instance,
            ).order_by(reload_runs.c.id.desc()).limit(limit)).all()
        return [ReloadRun(r[0], r[1], r[2], RunStatus(r[3]), r[4], r[5], ReloadCounts(**json.loads(r[6])),
                          [GateResult(**g) for g in json.loads(r[7])], r[8], r[9], r[10]) for r in rows]

    def snapshot(self) -> dict[str, str]:
        """kid → content hash of what the last switched reload served (empty before the first)."""
        with self.engine.connect() as connection:
            return dict(connection.execute(select(served_snapshot.c.kid, served_snapshot.c.content)).all())

    def replace_snapshot(self, contents: dict[str, str], previous: dict[str, str] | None = None) -> None:
        """Make the snapshot `contents`. Given `previous` (what `snapshot()` returned, under the same reload
        lock), only the rows that differ are written: a reload after a small change rewrites a few rows."""
        with self.engine.begin() as connection:
            if previous is None:
                connection.execute(delete(served_snapshot))
                previous = {}
            stale = [kid for kid, content in previous.items() if contents.get(kid) != content]
            for start in range(0, len(stale), SNAPSHOT_CHUNK):
                connection.execute(delete(served_snapshot).where(
                    served_snapshot.c.kid.in_(stale[start:start + SNAPSHOT_CHUNK])))
            fresh = [{"kid": k, "content": v} for k, v in contents.items() if previous.get(k) != v]
            if fresh:
                connection.execute(served_snapshot.insert(), fresh)
