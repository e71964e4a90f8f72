"""Approximate nearest neighbours (usearch HNSW) for `fast` mode on large KBs.

Filters are applied after the graph search: the index is asked for more neighbours than needed
(`overfetch`), those failing the filter mask are dropped, and if too few remain the exact scan over the
filtered vectors takes over, so a narrow filter never silently loses results.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from usearch.index import Index

log = logging.getLogger(__name__)
FILE_NAME = "vectors.usearch"


class VectorIndex:
    def __init__(self, index: Index, expansion_search: int):
        self._index = index
        self._index.expansion_search = expansion_search

    @classmethod
    def build(cls, vectors: np.ndarray, directory: Path, connectivity: int, expansion_add: int) -> None:
        started = time.monotonic()
        index = Index(ndim=vectors.shape[1], metric="cos", dtype="f16", connectivity=connectivity,
                      expansion_add=expansion_add)
        index.add(np.arange(len(vectors), dtype=np.uint64), vectors, log=False)
        index.save(str(directory / FILE_NAME))
        log.info("ANN index over %d vectors built in %.1fs", len(vectors), time.monotonic() - started)

    @classmethod
    def load(cls, directory: Path, expansion_search: int) -> VectorIndex | None:
        path = directory / FILE_NAME
        if not path.is_file():
            return None
        return cls(Index.restore(str(path), view=True), expansion_search)

    def nearest(self, query: np.ndarray, count: int, mask: np.ndarray, overfetch: int) -> np.ndarray | None:
        """Up to `count` documents passing `mask`, nearest first; None when the graph found too few."""
        matches = self._index.search(query, count * overfetch)
        keys = np.asarray(matches.keys, dtype=np.int64)
        keys = keys[mask[keys]]
        if len(keys) >= count or len(keys) >= int(mask.sum()):
            return keys[:count]
        return None
