"""The review database: the source of truth that experts approve or reject, and reloads read from.

SQLAlchemy Core, so one schema and one set of statements serve `sqlite:///path` (the default, a real
file database) and `postgresql://…` alike. Only approved, unexpired, not-deleted records reach an index.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    make_url,
    or_,
    select,
    update,
)

from kb_service.errors import InputError
from kb_service.records import KnowledgeRecord, now_timestamp
from kb_service.state import StateDatabase


class ReviewStatus(StrEnum):
    """Where a record stands in expert review; only approved records reach an index."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"

RECORD_COLUMNS = ("kid", "knowledge", "attribute", "value", "category", "confidence", "ref", "available",
                  "del", "create_timestamp", "update_timestamp", "expert_verified", "expires_at")

metadata = MetaData()
knowledge_review = Table(
    "knowledge_review", metadata,
    Column("kid", String(512), primary_key=True),
    Column("knowledge", Text, nullable=False),
    Column("attribute", Text, nullable=False),
    Column("value", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("confidence", Float),
    Column("ref", Text, nullable=False, default=""),
    Column("available", Integer, nullable=False, default=1),
    Column("del", Integer, nullable=False, default=0),
    Column("create_timestamp", String(19), nullable=False, default=""),
    Column("update_timestamp", String(19), nullable=False, default=""),
    Column("expert_verified", Integer, nullable=False, default=0),
    Column("expires_at", String(19), nullable=False, default=""),
    Column("status", String(16), nullable=False, default=ReviewStatus.PENDING.value, index=True),
    Column("reviewer", Text),
    Column("reviewed_at", String(19)),
    Column("imported_at", String(19), nullable=False),
)


class ReviewError(InputError):
    """A review action that cannot apply (unknown kid, bad status); nothing was changed."""


@dataclass(frozen=True)
class Servable:
    """What a reload may serve: the records, how many approved ones have expired, and each record's content
    hash (computed while reading, so the reload does not hash them again)."""

    records: list[KnowledgeRecord]
    expired: int
    fingerprints: dict[str, str]


@dataclass(frozen=True)
class ImportReport:
    inserted: int
    changed: int
    unchanged: int


def _row(record: KnowledgeRecord) -> dict:
    return {k: v for k, v in record.to_dict().items() if k in RECORD_COLUMNS}


class ReviewDatabase:
    """The records experts review, on the state stores' database helper (WAL and immediate transactions on
    SQLite, a checked pool on PostgreSQL)."""

    def __init__(self, url: str):
        self.url = url
        self.database = StateDatabase(make_url(url))
        self.engine = self.database.ready(*metadata.sorted_tables)

    def import_records(self, records: Iterable[KnowledgeRecord], status: ReviewStatus = ReviewStatus.PENDING,
                       reviewer: str | None = None) -> ImportReport:
        """Insert new kids and update changed ones; a changed record goes back to `status` (pending by
        default: edited knowledge needs another review). Unchanged records keep their review."""
        if status not in tuple(ReviewStatus):
            raise ReviewError(f"status must be one of {', '.join(ReviewStatus)}", "status")
        status = ReviewStatus(status)
        rows = {r.kid: _row(r) for r in records}
        inserted = changed = 0
        reviewed_at = now_timestamp() if status is not ReviewStatus.PENDING else None
        with self.engine.begin() as connection:
            existing: dict[str, Any] = {}  # kid → the stored row's mapping
            kids = list(rows)
            for start in range(0, len(kids), 500):
                chunk = kids[start:start + 500]
                for stored in connection.execute(select(knowledge_review).where(knowledge_review.c.kid.in_(chunk))):
                    existing[stored.kid] = stored._mapping
            fresh: list[dict] = []
            edits: list[dict] = []
            for kid, row in rows.items():
                review = {"status": status.value, "reviewer": reviewer, "reviewed_at": reviewed_at}
                old = existing.get(kid)
                if old is None:
                    fresh.append({**row, **review, "imported_at": now_timestamp()})
                elif any(old[k] != v for k, v in row.items()):
                    edits.append({**row, **review, "imported_at": now_timestamp()})
            if fresh:
                connection.execute(knowledge_review.insert(), fresh)
                inserted = len(fresh)
            for edit in edits:
                connection.execute(update(knowledge_review).where(knowledge_review.c.kid == edit["kid"]).values(**edit))
            changed = len(edits)
        return ImportReport(inserted, changed, len(rows) - inserted - changed)

    def set_status(self, kids: list[str] | None, status: ReviewStatus, reviewer: str) -> int:
        """Approve or reject the named kids (all pending ones when `kids` is None); returns how many."""
        if status not in (ReviewStatus.APPROVED, ReviewStatus.REJECTED):
            raise ReviewError("a review sets status approved or rejected", "status")
        status = ReviewStatus(status)
        if not reviewer:
            raise ReviewError("a review names its reviewer", "reviewer")
        condition = (knowledge_review.c.status == ReviewStatus.PENDING.value if kids is None
                     else knowledge_review.c.kid.in_(kids))
        with self.engine.begin() as connection:
            if kids is not None:
                found = {r.kid for r in connection.execute(select(knowledge_review.c.kid).where(condition))}
                missing = sorted(set(kids) - found)
                if missing:
                    raise ReviewError(f"no record with kid {', '.join(missing[:5])}; nothing was changed")
            result = connection.execute(update(knowledge_review).where(condition).values(
                status=status.value, reviewer=reviewer, reviewed_at=now_timestamp()))
            return result.rowcount

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(knowledge_review.c.status, func.count()).group_by(
                knowledge_review.c.status))
            return {status.value: 0 for status in ReviewStatus} | {status: count for status, count in rows}

    def listing(self, status: ReviewStatus | None = None, limit: int = 20) -> list[dict]:
        query = select(knowledge_review).order_by(knowledge_review.c.kid).limit(limit)
        if status:
            query = query.where(knowledge_review.c.status == ReviewStatus(status).value)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def servable(self, trusted: Mapping[str, str] | None = None, now: str | None = None) -> Servable:
        """Approved, not deleted, unexpired records, and how many approved ones have expired.

        Every row is validated as a file's record would be, except one whose content hash is in `trusted`
        (kid → hash of what the last reload validated and served): it is that very record, so a reload after a
        small change re-validates only the rows that changed."""
        now = now or now_timestamp()
        trusted = trusted or {}
        approved = and_(knowledge_review.c.status == ReviewStatus.APPROVED.value, knowledge_review.c["del"] == 0)
        live = or_(knowledge_review.c.expires_at == "", knowledge_review.c.expires_at > now)
        columns = [knowledge_review.c[name] for name in RECORD_COLUMNS]
        records: list[KnowledgeRecord] = []
        fingerprints: dict[str, str] = {}
        with self.engine.connect() as connection:
            for row in connection.execute(select(*columns).where(approved, live).order_by(knowledge_review.c.kid)):
                raw = {k: v for k, v in zip(RECORD_COLUMNS, row, strict=True) if v is not None or k == "confidence"}
                record, fingerprint = _trusted(raw, trusted.get(raw["kid"])) or _validated(raw)
                records.append(record)
                fingerprints[record.kid] = fingerprint
            expired = connection.execute(select(func.count()).where(approved, ~live)).scalar_one()
        return Servable(records, expired, fingerprints)

    def _sqlite_file(self) -> Path:
        parsed = make_url(self.url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
            raise ReviewError("backup and restore copy the SQLite review database file; for PostgreSQL use "
                              "pg_dump and pg_restore (see the README)", "database")
        return Path(parsed.database)

    def backup(self, target: Path) -> int:
        """A consistent copy of the review database in `target`, made with SQLite's online backup (reviews
        and reloads may go on meanwhile) into a temporary file renamed into place; returns its records."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        _copy_sqlite(self._sqlite_file(), partial)
        os.replace(partial, target)
        return _records_in(target)

    def restore(self, backup: Path) -> int:
        """Replace this database's contents with `backup`, after checking it is an intact review database
        (anything else changes nothing); returns the records restored."""
        backup = Path(backup)
        if not backup.is_file():
            raise ReviewError(f"{backup}: no such file", "file")
        try:
            records = _records_in(backup)
        except sqlite3.DatabaseError as err:
            raise ReviewError(f"{backup}: not a review database backup ({err})", "file") from None
        self.engine.dispose()
        _copy_sqlite(backup, self._sqlite_file())
        return records

    def close(self) -> None:
        self.database.dispose()


def _trusted(raw: dict, expected: str | None) -> tuple[KnowledgeRecord, str] | None:
    """The row as the record whose content hash is `expected`, with that hash, if it is that record."""
    if expected is None:
        return None
    try:
        record = KnowledgeRecord.from_stored(raw)
    except TypeError:  # a required column is NULL: validation names it
        return None
    return (record, expected) if record.fingerprint() == expected else None


def _validated(raw: dict) -> tuple[KnowledgeRecord, str]:
    """The row checked against the schema as a file's record is (RecordError names the field), with its hash."""
    record = KnowledgeRecord.from_mapping(raw)
    return record, record.fingerprint()


def _copy_sqlite(source: Path, target: Path) -> None:
    """Page by page under SQLite's own locking, so a live database copies consistently."""
    reader, writer = sqlite3.connect(source), sqlite3.connect(target)
    try:
        reader.backup(writer)
    finally:
        reader.close()
        writer.close()


def _records_in(path: Path) -> int:
    """How many records a review database file holds; raises sqlite3.DatabaseError for anything else."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if connection.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("integrity check failed")
        return connection.execute("SELECT count(*) FROM knowledge_review").fetchone()[0]
    finally:
        connection.close()


