"""BM25 per text field (bm25s, Lucene variant: the same formula Elasticsearch uses) plus phrase checks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import bm25s
import numpy as np

logging.getLogger("bm25s").setLevel(logging.WARNING)


class FieldTextIndex:
    """One text field: a bm25s index over pre-segmented tokens and the segmented text for phrase checks."""

    def __init__(self, bm25: bm25s.BM25, segmented: list[str]):
        self._bm25 = bm25
        self._segmented = segmented
        self._size = len(segmented)

    @classmethod
    def build(cls, segmented: list[str], k1: float, b: float) -> FieldTextIndex:
        bm25 = bm25s.BM25(method="lucene", k1=k1, b=b)
        bm25.index([text.split(" ") if text else [] for text in segmented], show_progress=False)
        return cls(bm25, segmented)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._bm25.save(str(directory), show_progress=False)
        (directory / "segmented.json").write_text(json.dumps(self._segmented, ensure_ascii=False),
                                                  encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> FieldTextIndex:
        bm25 = bm25s.BM25.load(str(directory), mmap=True, show_progress=False)
        segmented = json.loads((directory / "segmented.json").read_text(encoding="utf-8"))
        return cls(bm25, segmented)

    def match_scores(self, tokens: list[str]) -> np.ndarray:
        """OR of the tokens, summed BM25 (Elasticsearch `match`)."""
        known = [t for t in tokens if t in self._bm25.vocab_dict]
        if not known:
            return np.zeros(self._size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(known), dtype=np.float32)

    def phrase_scores(self, tokens: list[str]) -> np.ndarray:
        """Documents holding the tokens contiguously, scored as the sum of the tokens' BM25 (`match_phrase`).

        Lucene scores a phrase with its own frequency; summing the term scores is equal whenever each term
        occurs only inside the phrase, which is the case for the short entity names this clause targets.
        """
        per_token = [self.match_scores([t]) for t in tokens]
        if len(per_token) <= 1:
            return per_token[0] if per_token else np.zeros(self._size, dtype=np.float32)
        together = np.logical_and.reduce([s > 0 for s in per_token])
        scores = np.zeros(self._size, dtype=np.float32)
        needle = f" {' '.join(tokens)} "
        total = np.sum(per_token, axis=0)
        for doc in np.flatnonzero(together):
            if needle in f" {self._segmented[doc]} ":
                scores[doc] = total[doc]
        return scores
