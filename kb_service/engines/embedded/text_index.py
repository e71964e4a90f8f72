"""BM25 per text field (the Lucene variant Elasticsearch uses) plus phrase checks.

A field stores term frequencies and document lengths, not scores: BM25 is computed at query time from the
version's own statistics (document count, each term's document frequency, the mean length), as Lucene does.
Building is then a few array operations over the tokens (no per-document score pass), and k1 and b apply
from the config without a rebuild. Scores come back as postings (the matching documents only), so a query
costs in proportion to what it matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import orjson

from kb_service.engines.embedded.lines import MappedLines

SEGMENTED = "segmented.txt"
VOCABULARY = "vocabulary.json"
LENGTHS = "lengths.npy"
POSTINGS = ("docs", "tf", "starts")
ONE = np.float32(1)


def _tokens(text: str) -> list[str]:
    """The space-separated tokens of a segmented text (a doubled space separates no empty token)."""
    tokens = text.split(" ")
    return [token for token in tokens if token] if "" in tokens else tokens


class _Decoded(Sequence[str]):
    """The segmented text of a document, decoded from its mapped line when a phrase check reads it."""

    def __init__(self, lines: MappedLines):
        self._lines = lines

    def __getitem__(self, index: int) -> str:  # type: ignore[override]  # read one at a time, never sliced
        return self._lines[index].decode("utf-8")

    def __len__(self) -> int:
        return len(self._lines)


@dataclass(frozen=True)
class Postings:
    """Documents (ascending, unique) matching one term or phrase, with their unboosted scores."""

    docs: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Postings:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))

    def scores_of(self, docs: np.ndarray) -> np.ndarray:
        """The score of each of `docs` (0 where absent)."""
        if self.docs.size == 0:
            return np.zeros(docs.size, dtype=np.float32)
        positions = np.minimum(np.searchsorted(self.docs, docs), self.docs.size - 1)
        return np.where(self.docs[positions] == docs, self.scores[positions], np.float32(0))


class FieldTextIndex:
    """One text field: each term's documents and frequencies (term-major, like Lucene's postings), every
    document's length, and the segmented text for phrase checks."""

    def __init__(self, vocabulary: dict[str, int], postings: dict[str, np.ndarray], lengths: np.ndarray,
                 segmented: Sequence[str], k1: float, b: float):
        """`lengths` as float32, so that the norms (each document's length normalisation, computed once per
        open) stay float32 like Lucene's."""
        self._vocabulary = vocabulary
        self._postings = postings
        self._lengths = lengths
        self._segmented = segmented
        self._documents = lengths.size
        mean_length = np.float32(lengths.sum(dtype=np.float64) / lengths.size) if lengths.size else ONE
        self._norms = np.float32(k1) * (ONE - np.float32(b) + np.float32(b) * lengths / mean_length)

    @classmethod
    def build(cls, segmented: list[str], k1: float, b: float) -> FieldTextIndex:
        """Term frequencies of space-separated tokens, counted with numpy over every token at once."""
        tokens = [_tokens(text) for text in segmented]
        lengths = np.fromiter(map(len, tokens), dtype=np.int32, count=len(tokens))
        vocabulary = {token: i for i, token in enumerate(dict.fromkeys(chain.from_iterable(tokens)))}
        term_ids = np.fromiter(map(vocabulary.__getitem__, chain.from_iterable(tokens)), dtype=np.int64,
                               count=int(lengths.sum()))
        documents = np.repeat(np.arange(len(tokens), dtype=np.int64), lengths)
        width = max(len(tokens), 1)  # one key per (term, document): term-major, documents ascending within
        pairs, frequencies = np.unique(term_ids * width + documents, return_counts=True)
        terms = pairs // width
        postings = {"docs": (pairs % width).astype(np.int32),
                    "tf": frequencies.astype(np.float32),
                    "starts": np.searchsorted(terms, np.arange(len(vocabulary) + 1)).astype(np.int64)}
        return cls(vocabulary, postings, lengths.astype(np.float32), segmented, k1, b)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / VOCABULARY).write_bytes(orjson.dumps(list(self._vocabulary)))
        for part, values in self._postings.items():
            np.save(directory / f"postings.{part}.npy", values)
        np.save(directory / LENGTHS, self._lengths)
        MappedLines.write(directory / SEGMENTED, (text.replace("\n", " ") for text in self._segmented))

    @classmethod
    def load(cls, directory: Path, k1: float, b: float) -> FieldTextIndex:
        """The postings memory-mapped (worker processes share their pages), the vocabulary parsed by orjson,
        the segmented texts mapped and decoded only where a phrase check reads them."""
        words = orjson.loads((directory / VOCABULARY).read_bytes())
        postings = {part: np.load(directory / f"postings.{part}.npy", mmap_mode="r") for part in POSTINGS}
        return cls(dict(zip(words, range(len(words)), strict=True)), postings, np.load(directory / LENGTHS),
                   _Decoded(MappedLines(directory / SEGMENTED)), k1, b)

    def term_postings(self, token: str) -> Postings:
        """One token's BM25 per matching document: Lucene's idf · tf / (tf + k1 · (1 − b + b · dl / avgdl))."""
        token_id = self._vocabulary.get(token)
        if token_id is None:
            return Postings.empty()
        starts = self._postings["starts"]
        start, end = int(starts[token_id]), int(starts[token_id + 1])
        docs = np.asarray(self._postings["docs"][start:end], dtype=np.int64)
        tf = np.asarray(self._postings["tf"][start:end])
        idf = np.float32(np.log1p((self._documents - docs.size + 0.5) / (docs.size + 0.5)))
        return Postings(docs, idf * tf / (tf + self._norms[docs]))

    def match_postings(self, tokens: list[str]) -> list[Postings]:
        """OR of the tokens (Elasticsearch `match`): a document's score is the sum over the returned lists."""
        return [self.term_postings(token) for token in tokens]

    def phrase_postings(self, tokens: list[str]) -> Postings:
        """Documents holding the tokens contiguously, scored as the sum of the tokens' BM25 (`match_phrase`).

        Lucene scores a phrase with its own frequency; summing the term scores is equal whenever each term
        occurs only inside the phrase, which is the case for the short entity names this clause targets.
        """
        per_token = [self.term_postings(t) for t in tokens]
        if len(per_token) <= 1:
            return per_token[0] if per_token else Postings.empty()
        together = per_token[0].docs
        for postings in per_token[1:]:
            together = np.intersect1d(together, postings.docs, assume_unique=True)
        needle = f" {' '.join(tokens)} "
        docs = np.array([doc for doc in together.tolist() if needle in f" {self._segmented[doc]} "], dtype=np.int64)
        total = np.zeros(docs.size, dtype=np.float32)
        for postings in per_token:
            total += postings.scores[np.searchsorted(postings.docs, docs)]
        return Postings(docs, total)
