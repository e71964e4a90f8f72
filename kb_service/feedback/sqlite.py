"""The feedback stores' SQLite files: one connection shared by the server's threads (calls are serialised by
each store's lock), write-ahead logging so the CLI can read while the server writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """`path` opened for the server's threads, with `schema` (one or more `;`-separated statements) applied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    database = sqlite3.connect(path, timeout=30, check_same_thread=False)
    database.execute("PRAGMA journal_mode=WAL")
    for statement in filter(str.strip, schema.split(";")):
        database.execute(statement)
    return database
