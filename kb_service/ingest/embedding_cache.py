"""Content-hash embedding cache, so unchanged records are never encoded twice across reloads.

Two layers: a SQLite table of every vector encoded under an encoder identity, and a snapshot of the last
build's vectors (one array with its keys, read whole in a fraction of a second). A reload after a small
change finds nearly every record in the snapshot, and only the few it lacks are looked up row by row.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import zipfile
from pathlib import Path

import numpy as np

from kb_service.progress import Progress

CHUNK = 900

log = logging.getLogger(__name__)


class EmbeddingCache:
    def __init__(self, path: Path, identity: str, dims: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.identity = identity
        self.dims = dims
        tag = hashlib.blake2b(identity.encode("utf-8"), digest_size=8).hexdigest()
        self.snapshot = path.parent / f"last-build-{tag}.npz"
        self._db = sqlite3.connect(path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (identity TEXT NOT NULL, hash TEXT NOT NULL, "
                         "vector BLOB NOT NULL, PRIMARY KEY (identity, hash)) WITHOUT ROWID")

    def _from_snapshot(self, wanted: list[str]) -> dict[str, np.ndarray]:
        """The vectors of `wanted` that the last build held; nothing when its snapshot is missing, unreadable
        or of other dimensions (the table still answers, only slower)."""
        try:
            with np.load(self.snapshot) as stored:
                keys, vectors = stored["keys"], stored["vectors"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            if self.snapshot.exists():
                log.warning("embedding cache: ignoring the last build's snapshot %s (%s)", self.snapshot, err)
            return {}
        if vectors.ndim != 2 or vectors.shape != (keys.size, self.dims) or vectors.dtype != np.float32:
            return {}
        row_of = dict(zip(keys.tolist(), range(keys.size), strict=True))
        return {key: vectors[row] for key in wanted if (row := row_of.get(key)) is not None}

    def get_many(self, hashes: list[str]) -> dict[str, np.ndarray]:
        unique = list(dict.fromkeys(hashes))
        found = self._from_snapshot(unique)
        rest = [key for key in unique if key not in found]
        progress = Progress("reading the embedding cache", len(rest))
        for start in range(0, len(rest), CHUNK):
            chunk = rest[start:start + CHUNK]
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

    def remember(self, hashes: list[str], vectors: np.ndarray) -> None:
        """Keep this build's vectors (row i is `hashes[i]`'s) as the snapshot the next build reads first;
        written beside and renamed over the old one, so a reader never sees half of it."""
        temporary = self.snapshot.with_name(f".{self.snapshot.stem}.{os.getpid()}.npz")
        try:
            np.savez(temporary, keys=np.array(hashes, dtype=f"U{max(map(len, hashes), default=1)}"),
                     vectors=np.ascontiguousarray(vectors, dtype=np.float32))
            os.replace(temporary, self.snapshot)
        finally:
            temporary.unlink(missing_ok=True)

    def close(self) -> None:
        self._db.close()
