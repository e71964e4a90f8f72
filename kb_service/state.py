"""The service's shared state (search events, judgments, the query log, reload history, access control) in
SQLAlchemy databases: by default one SQLite file per store in the data directory, which the processes of one
host share; with `state.database`, one database (PostgreSQL) that every host behind a balancer shares.

Each store owns its tables and statements; this module owns how a database is opened: one engine per URL and
process (an engine inherited across fork is never used, its connections belong to the parent), SQLite in WAL
mode with every transaction taken as a writer (`BEGIN IMMEDIATE`), so a read-modify-write in one store is
serialised across processes exactly as PostgreSQL's row locks serialise it across hosts.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import (
    URL,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    event,
    func,
    make_url,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError
from sqlalchemy.types import TypeEngine

from kb_service import logs
from kb_service.config import ServiceConfig
from kb_service.errors import InputError


def table(name: str, key: Column, *columns: Column, **required: type[TypeEngine]) -> Table:
    """A state store's table: its key, then `columns` as given, then the `required` ones (NOT NULL), in order."""
    return Table(name, MetaData(), key, *columns, *(Column(n, kind, nullable=False) for n, kind in required.items()))


def serial_key() -> Column:
    """An autoincrementing integer `id`, for rows that have no natural key."""
    return Column("id", Integer, primary_key=True, autoincrement=True)


MAX_SECRET_BYTES = 4096
SCHEMA_LOCK = 0x6B62_7374_6174_65  # the advisory lock taken while creating tables ("kbstate")

_engines: dict[tuple[int, str], StateDatabase] = {}
_engines_lock = threading.Lock()


class StateDatabaseError(InputError):
    """`state.database` cannot be used (not a URL SQLAlchemy knows, a driver missing, a password file that
    cannot be read); the message names the setting."""

    code = "state_unavailable"


class StateDatabase:
    """One database's engine and the few statements whose spelling differs between SQLite and PostgreSQL."""

    def __init__(self, url: URL):
        self.url = url
        self.is_sqlite = url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_connected)
            event.listen(self.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, pool_timeout=10,
                                        connect_args={"connect_timeout": 5})

        self._created: set[str] = set()
        self._create_lock = threading.Lock()

    def ready(self, *tables: Table, upgrade: Callable[[Connection], None] | None = None) -> Engine:
        """The engine, with `tables` created if missing (and `upgrade` run on them): done at first use rather
        than at start, so a state database that is down when the server starts costs its own routes, never
        search; under a database-wide lock, so hosts starting together do not race to create them."""
        if not self._created.issuperset(t.name for t in tables):
            with self._create_lock, self.engine.begin() as connection:
                if not self.is_sqlite:  # SQLite's BEGIN IMMEDIATE has already serialised this
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
                for table in tables:
                    table.create(connection, checkfirst=True)
                if upgrade is not None:
                    upgrade(connection)
                self._created.update(t.name for t in tables)
        return self.engine

    def upsert(self, table: Table, rows: list[dict] | dict, keys: tuple[str, ...],
               changes: Callable[[Any], dict] | None = None):
        """An INSERT whose rows update the row with the same `keys` instead (`changes(excluded)`: the columns
        to set; default every other column the rows name)."""
        dialect: Any = sqlite if self.is_sqlite else postgresql
        statement = dialect.insert(table).values(rows)
        first = rows[0] if isinstance(rows, list) else rows
        update = changes(statement.excluded) if changes else {
            name: statement.excluded[name] for name in first if name not in keys}
        return statement.on_conflict_do_update(index_elements=list(keys), set_=update)

    def bytes_used(self, table: Table, newest_first) -> int:
        """The bytes `table`'s live rows take: SQLite's pages in use by the whole file; on PostgreSQL the row
        count times the mean size of the newest 1,000 rows (the relation's own size only shrinks at VACUUM)."""
        with self.engine.connect() as connection:
            if self.is_sqlite:
                pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
                free = connection.exec_driver_sql("PRAGMA freelist_count").scalar_one()
                return (pages - free) * connection.exec_driver_sql("PRAGMA page_size").scalar_one()
            sample = select(table).order_by(newest_first).limit(1000).subquery("sample")
            mean = connection.execute(select(func.avg(func.pg_column_size(text("sample.*"))))
                                      .select_from(sample)).scalar_one()
            rows = connection.execute(select(func.count()).select_from(table)).scalar_one()
            return int(rows * float(mean or 0))

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_connected(connection, _record) -> None:
    """Autocommit for the driver (the "begin" hook issues BEGIN IMMEDIATE itself) and WAL, so readers never
    wait for a writer. Switching a file to WAL can fail at once with "database is locked" while another
    connection is setting it up (SQLite's busy timeout does not cover it), so that is retried for a while."""
    connection.isolation_level = None
    deadline = time.monotonic() + 10
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def state_url(config: ServiceConfig, store: str, password: str | None = None) -> URL:
    """Where `store` keeps its rows: `state.database` with `password` (the runtime's $KB_STATE_PASSWORD) or
    the one in `state.password_file`, else its SQLite file in the data directory."""
    if not config.state.database:
        return make_url(f"sqlite:///{config.paths.state(store)}")
    try:
        url = make_url(config.state.database)
    except ArgumentError:
        raise StateDatabaseError("expected a SQLAlchemy URL such as postgresql://kb@db.internal/kb",
                                 "state.database") from None
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3, the driver the install step brings
    password = password or _password_file(config.state.password_file)
    if password:
        logs.mask(password)
        url = url.set(password=password)
    return url


def _password_file(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with Path(path).open("rb") as handle:
            value = handle.read(MAX_SECRET_BYTES + 1).decode("utf-8", "replace").strip()
    except OSError as err:
        raise StateDatabaseError(f"cannot read {path}: {err.strerror}", "state.password_file") from None
    if not value or "\n" in value or len(value) > MAX_SECRET_BYTES:
        raise StateDatabaseError(f"{path} must hold the password alone, on one line", "state.password_file")
    return value


def open_state(config: ServiceConfig, store: str, password: str | None = None) -> StateDatabase:
    """The process's database for `store` (stores on one URL share its engine and connection pool)."""
    url = state_url(config, store, password)
    key = (os.getpid(), url.render_as_string(hide_password=False))
    with _engines_lock:
        database = _engines.get(key)
        if database is None:
            try:
                database = _engines[key] = StateDatabase(url)
            except (ArgumentError, ModuleNotFoundError) as err:
                raise StateDatabaseError(f"cannot open {url!r}: {err}", "state.database") from None
        return database


def instance_name(config: ServiceConfig) -> str:
    """Which host (or instance) did something, in shared rows such as the reload history."""
    return config.state.instance or socket.gethostname()
