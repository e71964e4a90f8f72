"""The peers kb-service is measured against, on the same records, vectors, tokens and queries.

- LanceDB's embedded hybrid search: vector search plus its native full-text index, fused by its default
  reciprocal-rank reranker, with the del/available filter applied before the search.
- A plain baseline: bm25s over each record's text plus numpy brute-force cosine, min-max normalised and
  summed (what a team would hand-roll first).

Both get the service's own jieba segmentation (whitespace-joined) so text matching is not what differs, and
the service's encoder for query vectors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import bm25s
import numpy as np

from kb_service.records import KnowledgeRecord
from query_understanding.segmenter import Segmenter

Ranker = Callable[[str], list[str]]


def record_text(record: KnowledgeRecord) -> str:
    return f"{record.knowledge} {record.attribute} {record.value}"


class PlainBaseline:
    """bm25s + numpy cosine, each min-max normalised over its top 100 and summed."""

    def __init__(self, records: list[KnowledgeRecord], vectors: np.ndarray, segmenter: Segmenter,
                 encode: Callable[[str], np.ndarray]):
        started = time.perf_counter()
        self.kids = [r.kid for r in records]
        self.live = np.array([not r.deleted and r.available for r in records])
        self.vectors = vectors
        self.segmenter = segmenter
        self.encode = encode
        self.bm25 = bm25s.BM25()
        self.bm25.index([segmenter.segmented(record_text(r)).split() for r in records], show_progress=False)
        self.build_seconds = time.perf_counter() - started

    def rank(self, query: str, size: int = 100) -> list[str]:
        tokens = self.segmenter.segmented(query).split()
        text = self.bm25.get_scores(tokens) if tokens else np.zeros(len(self.kids))
        cosine = self.vectors @ self.encode(query)
        fused = _minmax(text) + _minmax(cosine)
        fused[~self.live] = -np.inf
        top = np.argpartition(-fused, size)[:size]
        return [self.kids[i] for i in top[np.argsort(-fused[top])]]


def _minmax(scores: np.ndarray) -> np.ndarray:
    top = np.partition(scores, -100)[-100:] if scores.size > 100 else scores
    low, high = float(top.min()), float(scores.max())
    return np.clip((scores - low) / (high - low), 0, None) if high > low else np.zeros_like(scores)


class LanceHybrid:
    """LanceDB: one table with the segmented text, flags and vectors; FTS index plus flat vector search."""

    def __init__(self, directory: Path, records: list[KnowledgeRecord], vectors: np.ndarray,
                 segmenter: Segmenter, encode: Callable[[str], np.ndarray]):
        for variable in ("LANCE_LOG", "LANCEDB_LOG"):  # its Rust core warns about score columns on every query
            os.environ.setdefault(variable, "error")
        import lancedb
        import pyarrow as pa
        from lancedb.index import FTS

        started = time.perf_counter()
        self.segmenter = segmenter
        self.encode = encode
        database = lancedb.connect(str(directory))
        dims = vectors.shape[1]
        table = pa.table({
            "kid": [r.kid for r in records],
            "text": [segmenter.segmented(record_text(r)) for r in records],
            "del": [r.deleted for r in records],
            "available": [r.available for r in records],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), dims),
        })
        self.table = database.create_table("kb", table, mode="overwrite")
        self.table.create_index("text", config=FTS(base_tokenizer="whitespace", lower_case=False, stem=False,
                                                   remove_stop_words=False, ascii_folding=False))
        self.build_seconds = time.perf_counter() - started
        self.bytes = sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())

    def rank(self, query: str, size: int = 100) -> list[str]:
        text = self.segmenter.segmented(query)
        vector = self.encode(query)
        if not text:
            search = self.table.search(vector)
        else:
            search = self.table.search(query_type="hybrid").vector(vector).text(text)
        rows = search.where("del = 0 AND available = 1", prefilter=True).limit(size).select(["kid"]).to_list()
        return [row["kid"] for row in rows]
