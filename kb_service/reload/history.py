"""The persistent history of reload jobs, and the snapshot of what the last switched reload served.

One SQLite file in the data directory, shared by every process on the host: the CLI, the API and the
scheduler read and write the same rows. A run left `running` by a killed process is marked `crashed` by
the next reload, which holds the reload lock and so knows nobody else is running.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from kb_service.records import now_timestamp

SCHEMA = """
CREATE TABLE IF NOT EXISTS reload_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger TEXT NOT NULL,
    started TEXT NOT NULL,
    ended TEXT,
    status TEXT NOT NULL,
    version TEXT,
    counts TEXT NOT NULL DEFAULT '{}',
    gates TEXT NOT NULL DEFAULT '[]',
    duration_s REAL,
    message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS served_snapshot (kid TEXT PRIMARY KEY, content TEXT NOT NULL);
"""


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

    def to_dict(self) -> dict:
        return asdict(self)


class ReloadHistory:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.executescript(SCHEMA)

    def start(self, trigger: str) -> ReloadRun:
        started = now_timestamp()
        cursor = self.connection.execute("INSERT INTO reload_runs (trigger, started, status) VALUES (?, ?, ?)",
                                         (trigger, started, RunStatus.RUNNING))
        return ReloadRun(cursor.lastrowid, trigger, started, RunStatus.RUNNING)

    def finish(self, run: ReloadRun) -> None:
        run.ended = now_timestamp()
        self.connection.execute(
            "UPDATE reload_runs SET ended=?, status=?, version=?, counts=?, gates=?, duration_s=?, message=? "
            "WHERE id=?",
            (run.ended, run.status, run.version, json.dumps(asdict(run.counts)),
             json.dumps([asdict(g) for g in run.gates], ensure_ascii=False), run.duration_s, run.message, run.id))

    def mark_crashed(self) -> int:
        """Runs still `running` while the caller holds the reload lock were killed mid-way."""
        return self.connection.execute(
            "UPDATE reload_runs SET status=?, message='the process running it died' WHERE status=?",
            (RunStatus.CRASHED, RunStatus.RUNNING)).rowcount

    def runs(self, limit: int = 20) -> list[ReloadRun]:
        rows = self.connection.execute(
            "SELECT id, trigger, started, status, ended, version, counts, gates, duration_s, message "
            "FROM reload_runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [ReloadRun(r[0], r[1], r[2], RunStatus(r[3]), r[4], r[5], ReloadCounts(**json.loads(r[6])),
                          [GateResult(**g) for g in json.loads(r[7])], r[8], r[9]) for r in rows]

    def snapshot(self) -> dict[str, str]:
        """kid → content hash of what the last switched reload served (empty before the first)."""
        return dict(self.connection.execute("SELECT kid, content FROM served_snapshot"))

    def replace_snapshot(self, contents: dict[str, str]) -> None:
        with self.connection:
            self.connection.execute("BEGIN")
            self.connection.execute("DELETE FROM served_snapshot")
            self.connection.executemany("INSERT INTO served_snapshot VALUES (?, ?)", contents.items())

    def close(self) -> None:
        self.connection.close()
