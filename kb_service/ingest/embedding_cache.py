"""Content-hash embedding cache (SQLite), so unchanged records are never encoded twice across reloads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from kb_service.progress import Progress

CHUNK = 900


class EmbeddingCache:
    def __init__(self, path: Path, identity: str, dims: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.identity = identity
        self.dims = dims
        self._db = sqlite3.connect(path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (identity TEXT NOT NULL, hash TEXT NOT NULL, "
                         "vector BLOB NOT NULL, PRIMARY KEY (identity, hash)) WITHOUT ROWID")

    def get_many(self, hashes: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        progress = Progress("reading the embedding cache", len(unique))
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start:start + CHUNK]
            rows = self._db.execute(
                f"SELECT hash, vector FROM vectors WHERE identity = ? AND hash IN ({','.join('?' * len(chunk))})",
                [self.identity, *chunk])
            for content_hash, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.size == self.dims:
                    found[content_hash] = vector
            progress.advance(len(chunk))
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                                 [(self.identity, h, np.asarray(v, dtype=np.float32).tobytes())
                                  for h, v in items.items()])

    def close(self) -> None:
        self._db.close()
