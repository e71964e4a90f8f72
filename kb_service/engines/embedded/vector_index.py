"""Approximate nearest neighbours for `fast` mode on large KBs: 4-bit product-quantised codes (faiss fast-scan),
split into inverted lists of which each search scans the `probes` nearest, whose top `count × overfetch` the
engine then rescores with exact cosines.

Why not a graph: KB records repeat one pattern per attribute ("X / 时区: Asia/Shanghai" for thousands of X),
so their vectors form dense clusters of near-duplicates in which HNSW searches stall; on 100k geo records a
usearch graph (M=32, ef=4000) still missed 4 % of the exact top 10, while scanning every code missed 0.3 % in
a third of a millisecond. At a million records that full scan costs ~10 ms, so the codes are partitioned
(IVF): a dense cluster lands in a few lists, which the probes reach. Filters are applied after the scan, with
an exact scan of the filtered vectors when too few neighbours pass, so a narrow filter never silently loses
results.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)
FILE_NAME = "vectors.faiss"
TRAINING_SAMPLE = 65_536
CHUNK = 100_000
POINTS_PER_LIST = 256


def subquantizers_for(dims: int, wanted: int) -> int:
    """The most sub-quantizers up to `wanted` that divide the vector evenly (faiss requires it)."""
    return max(m for m in range(1, min(wanted, dims) + 1) if dims % m == 0)


class VectorIndex:
    def __init__(self, index: faiss.Index):
        self._index = index

    @classmethod
    def build(cls, vectors: np.ndarray, directory: Path, subquantizers: int, partitions: int = 0) -> None:
        """`partitions` is capped so each list holds at least POINTS_PER_LIST vectors on average (k-means needs
        them to place its centroids); below two lists every code is scanned."""
        started = time.monotonic()
        dims = vectors.shape[1]
        m = subquantizers_for(dims, subquantizers)
        lists = min(partitions, len(vectors) // POINTS_PER_LIST)
        quantizer = faiss.IndexFlatIP(dims)  # referenced until written: the index does not own it yet
        index = (faiss.IndexIVFPQFastScan(quantizer, dims, lists, m, 4, faiss.METRIC_INNER_PRODUCT) if lists >= 2
                 else faiss.IndexPQFastScan(dims, m, 4, faiss.METRIC_INNER_PRODUCT))
        sample = np.random.default_rng(0).choice(len(vectors), min(len(vectors), max(TRAINING_SAMPLE, 40 * lists)),
                                                 replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
        for start in range(0, len(vectors), CHUNK):
            index.add(np.ascontiguousarray(vectors[start:start + CHUNK], dtype=np.float32))
        faiss.write_index(index, str(directory / FILE_NAME))
        log.info("ANN codes for %d vectors (%d sub-quantizers, %s) built in %.1fs", len(vectors), m,
                 f"{lists} lists" if lists >= 2 else "one scan", time.monotonic() - started)

    @classmethod
    def load(cls, directory: Path, probes: int) -> VectorIndex | None:
        path = directory / FILE_NAME
        if not path.is_file():
            return None
        index = faiss.read_index(str(path))
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = probes
        return cls(index)

    def nearest(self, query: np.ndarray, count: int, mask: np.ndarray, overfetch: int) -> np.ndarray | None:
        """Up to `count` documents passing `mask`, nearest first; None when the scan found too few."""
        _, keys = self._index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), count * overfetch)
        keys = keys[0][keys[0] >= 0]
        keys = keys[mask[keys]]
        if len(keys) >= count or len(keys) >= int(mask.sum()):
            return keys[:count]
        return None
