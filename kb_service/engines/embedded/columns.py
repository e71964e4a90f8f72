"""Keyword columns: one integer code per document, for exact-match filters and term clauses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import orjson

from kb_service.engines.embedded.text_index import Postings


@dataclass
class KeywordColumn:
    codes: np.ndarray
    vocabulary: dict[str, int]
    doc_freq: np.ndarray

    @cached_property
    def _by_code(self) -> np.ndarray:
        """Documents grouped by code, ascending within a code: the postings, sorted on first use so that
        opening a version does not argsort every column (five per version; 1.3M rows each on kb-large)."""
        return np.argsort(self.codes, kind="stable")

    @cached_property
    def _starts(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.doc_freq)))

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
        words = orjson.loads((directory / f"{name}.vocab.json").read_bytes())
        return cls(codes, dict(zip(words, range(len(words)), strict=True)), np.bincount(codes, minlength=len(words)))

    def _docs(self, code: int) -> np.ndarray:
        return self._by_code[self._starts[code]:self._starts[code + 1]]

    def matches(self, values) -> np.ndarray:
        """Boolean mask of documents whose value is one of `values` (unknown values match nothing)."""
        mask = np.zeros(len(self.codes), dtype=bool)
        for value in values:
            if value in self.vocabulary:
                mask[self._docs(self.vocabulary[value])] = True
        return mask

    def term_score(self, value: str, k1: float) -> np.float32:
        """Lucene BM25 of a term on a keyword field, the same for every document holding it: norms are off,
        so tf/(tf + k1) with tf = 1. Zero for a value no document holds."""
        code = self.vocabulary.get(value)
        if code is None:
            return np.float32(0)
        df = float(self.doc_freq[code])
        return np.float32(np.log1p((len(self.codes) - df + 0.5) / (df + 0.5)) / (1.0 + k1))

    def term_postings(self, value: str, k1: float) -> Postings:
        code = self.vocabulary.get(value)
        if code is None:
            return Postings.empty()
        docs = self._docs(code)
        return Postings(docs, np.full(docs.size, self.term_score(value, k1), dtype=np.float32))
