"""Keyword columns: one integer code per document, for exact-match filters and term clauses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class KeywordColumn:
    codes: np.ndarray
    vocabulary: dict[str, int]
    doc_freq: np.ndarray

    @classmethod
    def build(cls, values: list[str]) -> KeywordColumn:
        vocabulary: dict[str, int] = {}
        codes = np.fromiter((vocabulary.setdefault(v, len(vocabulary)) for v in values), dtype=np.int32,
                            count=len(values))
        return cls(codes, vocabulary, np.bincount(codes, minlength=len(vocabulary)).astype(np.int32))

    def save(self, directory: Path, name: str) -> None:
        np.save(directory / f"{name}.codes.npy", self.codes)
        (directory / f"{name}.vocab.json").write_text(json.dumps(list(self.vocabulary), ensure_ascii=False),
                                                      encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, name: str) -> KeywordColumn:
        codes = np.load(directory / f"{name}.codes.npy")
        words = json.loads((directory / f"{name}.vocab.json").read_text(encoding="utf-8"))
        return cls(codes, {w: i for i, w in enumerate(words)}, np.bincount(codes, minlength=len(words)))

    def matches(self, values) -> np.ndarray:
        """Boolean mask of documents whose value is one of `values` (unknown values match nothing)."""
        wanted = [self.vocabulary[v] for v in values if v in self.vocabulary]
        if not wanted:
            return np.zeros(len(self.codes), dtype=bool)
        if len(wanted) == 1:
            return self.codes == wanted[0]
        return np.isin(self.codes, wanted)

    def term_scores(self, value: str, k1: float) -> np.ndarray:
        """Lucene BM25 for a term on a keyword field: norms are off, so tf/(tf + k1) with tf = 1."""
        scores = np.zeros(len(self.codes), dtype=np.float32)
        code = self.vocabulary.get(value)
        if code is None:
            return scores
        df = float(self.doc_freq[code])
        idf = np.log1p((len(self.codes) - df + 0.5) / (df + 0.5))
        scores[self.codes == code] = idf / (1.0 + k1)
        return scores
