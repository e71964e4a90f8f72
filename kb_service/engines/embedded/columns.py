"""Keyword columns: one integer code per document, for exact-match filters and term clauses."""

from __future__ import annotations

import json
from collections.abc import Iterable
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
        vocabulary = {value: i for i, value in enumerate(dict.fromkeys(values))}  # codes in order of appearance
        codes = np.fromiter(map(vocabulary.__getitem__, values), dtype=np.int32, count=len(values))
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

    @cached_property
    def words(self) -> list[str]:
        return list(self.vocabulary)

    @cached_property
    def _order_of_code(self) -> np.ndarray:
        """Each code's position among the column's values in code-point order, NaN for the empty value."""
        order = np.empty(len(self.words), dtype=np.float64)
        order[sorted(range(len(self.words)), key=self.words.__getitem__)] = np.arange(len(self.words))
        if "" in self.vocabulary:
            order[self.vocabulary[""]] = np.nan
        return order

    def sort_values(self, docs: np.ndarray) -> np.ndarray:
        """The documents' values as numbers in code-point order (NaN where empty), for sorting."""
        return self._order_of_code[self.codes[docs]]

    def present(self) -> np.ndarray:
        """Boolean mask of documents whose value is not empty (an optional field such as `ref`)."""
        empty = self.vocabulary.get("")
        return np.ones(len(self.codes), dtype=bool) if empty is None else self.codes != empty

    def most_frequent(self, mask: np.ndarray, count: int) -> list[tuple[str, int]]:
        """The `count` most frequent non-empty values among the documents of `mask`, ties in code-point order."""
        counts = np.bincount(self.codes[mask], minlength=len(self.words))
        if "" in self.vocabulary:
            counts[self.vocabulary[""]] = 0
        present = np.flatnonzero(counts)
        if present.size > count:  # only the values that can make the cut go through Python's sort
            present = present[counts[present] >= np.partition(counts[present], -count)[-count]]
        best = sorted(present.tolist(), key=lambda code: (-int(counts[code]), self.words[code]))[:count]
        return [(self.words[code], int(counts[code])) for code in best]

    def _docs(self, code: int) -> np.ndarray:
        return self._by_code[self._starts[code]:self._starts[code + 1]]

    def matches(self, values: Iterable[str]) -> np.ndarray:
        """Boolean mask of documents whose value is one of `values` (unknown values, and the empty value of
        an optional field, which Elasticsearch does not index, match nothing)."""
        mask = np.zeros(len(self.codes), dtype=bool)
        for value in values:
            if value and value in self.vocabulary:
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
