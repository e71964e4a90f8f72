"""BM25 per text field (bm25s, Lucene variant: the same formula Elasticsearch uses) plus phrase checks.

Scores come back as postings (the matching documents only) rather than one array over the whole KB, so a
query costs in proportion to what it matches: on a million-record KB a dense array per term dominated `fast`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from kb_service.engines.embedded.lines import MappedLines

SEGMENTED = "segmented.txt"


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
    """One text field: a bm25s index over pre-segmented tokens and the segmented text for phrase checks."""

    def __init__(self, vocabulary: dict[str, int], matrix: dict[str, np.ndarray], segmented: Sequence[str],
                 bm25: Any = None):
        self._vocabulary = vocabulary
        self._matrix = matrix
        self._segmented = segmented
        self._bm25 = bm25  # kept by `build` for `save`

    @classmethod
    def build(cls, segmented: list[str], k1: float, b: float) -> FieldTextIndex:
        import bm25s  # only builds need it (its import alone takes 0.8 s of a server's start)

        logging.getLogger("bm25s").setLevel(logging.WARNING)
        bm25 = bm25s.BM25(method="lucene", k1=k1, b=b)
        bm25.index([text.split(" ") if text else [] for text in segmented], show_progress=False)
        return cls(bm25.vocab_dict, bm25.scores, segmented, bm25)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._bm25.save(str(directory), show_progress=False)
        MappedLines.write(directory / SEGMENTED, (text.replace("\n", " ") for text in self._segmented))

    @classmethod
    def load(cls, directory: Path) -> FieldTextIndex:
        """bm25s's files read directly: its vocabulary by orjson and its score matrix memory-mapped (bm25s's
        own loader parses the vocabulary with the standard json module, 0.8 s for kb-large's values); the
        segmented texts mapped (versions written before that stored them as one JSON list)."""
        vocabulary = orjson.loads((directory / "vocab.index.json").read_bytes())
        matrix = {part: np.load(directory / f"{part}.csc.index.npy", mmap_mode="r")
                  for part in ("data", "indices", "indptr")}
        if (directory / SEGMENTED).is_file():
            segmented = _Decoded(MappedLines(directory / SEGMENTED))
        else:
            segmented = orjson.loads((directory / "segmented.json").read_bytes())
        return cls(vocabulary, matrix, segmented)

    def term_postings(self, token: str) -> Postings:
        """One token's BM25 per matching document: a column of bm25s's precomputed score matrix."""
        token_id = self._vocabulary.get(token)
        if token_id is None:
            return Postings.empty()
        matrix = self._matrix
        start, end = int(matrix["indptr"][token_id]), int(matrix["indptr"][token_id + 1])
        return Postings(np.asarray(matrix["indices"][start:end]), np.asarray(matrix["data"][start:end]))

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
