"""Attribute linking as a ranked decision over the question part of a query (the text outside the entity).

The lexicon (attribute names and YAML synonyms) links what it lists with certainty. Everything else is
ranked: character and word overlap with each attribute's words counts partial matches (保修多久 shares 保修
with 保修期), and the cosine of the question part to a per-attribute prototype (the mean embedding of its
name, synonyms and example questions) reads wordings no list holds. A softmax over the blend gives a
probability per attribute, so a question nobody phrased before still shares the linked-answer boost among
the likeliest attributes instead of falling back to an overview. Attributes come from the KB being served,
so a KB with attributes the code has never seen is ranked the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

import numpy as np

from query_understanding.normalise import normalise_text

ATTRIBUTE_SIGNALS = ("overlap", "embedding")
MAX_ATTRIBUTES = 3  # a question shares its boost among at most this many attributes …
MASS = 0.9  # … the fewest whose probabilities add up to this
_HAN = re.compile(r"[\u4e00-\u9fff]")
_LATIN_WORD = re.compile(r"[a-z0-9]{2,}")


def units(text: str, stop_words: frozenset[str] = frozenset()) -> frozenset[str]:
    """What overlap is counted in: Chinese characters one by one, Latin-script words whole."""
    return frozenset(_HAN.findall(text)) | frozenset(w for w in _LATIN_WORD.findall(text) if w not in stop_words)


@dataclass(frozen=True)
class RankedAttribute:
    name: str
    probability: float
    overlap: float
    cosine: float


@dataclass
class AttributeRanker:
    """Ranks a KB's attributes for a question part; `embed_many` is the query encoder (None: overlap only)."""

    words: dict[str, tuple[str, ...]]  # attribute -> its name, synonyms and example questions, normalised
    overlap_weight: float = 0.5
    temperature: float = 0.05
    embed_many: Callable[[list[str]], np.ndarray] | None = None
    stop_words: frozenset[str] = frozenset()
    use_overlap: bool = True
    _units: list[list[frozenset[str]]] = field(default_factory=list, init=False)
    _prototypes: np.ndarray | None = field(default=None, init=False)

    @classmethod
    def build(cls, attributes: Iterable[str], synonyms: dict[str, tuple[str, ...]],
              examples: dict[str, tuple[str, ...]], **settings) -> AttributeRanker:
        words = {a: tuple(dict.fromkeys(normalise_text(w) for w in (a, *synonyms.get(a, ()), *examples.get(a, ()))))
                 for a in sorted(attributes)}
        return cls(words, **settings)

    def __post_init__(self):
        self._names = list(self.words)
        self._units = [[units(w, self.stop_words) for w in self.words[a]] for a in self._names]
        if self.embed_many and self._names:
            texts = [w for a in self._names for w in self.words[a]]
            vectors = self.embed_many(texts)
            prototypes, position = [], 0
            for a in self._names:
                mean = vectors[position:position + len(self.words[a])].mean(axis=0)
                prototypes.append(mean / (np.linalg.norm(mean) or 1.0))
                position += len(self.words[a])
            self._prototypes = np.stack(prototypes).astype(np.float32)

    def rank(self, question: str, vector: np.ndarray | None = None, among: Collection[str] | None = None
             ) -> list[RankedAttribute]:
        """The likeliest attributes for `question` (normalised), most probable first, probabilities summing
        to at most 1; `vector` is the question's embedding when an encoder is at hand, `among` the attributes
        the linked entity can have (None: all)."""
        rows = [i for i, name in enumerate(self._names) if among is None or name in among]
        if not rows:
            return []
        asked = units(question, self.stop_words)
        overlap = np.array([max((len(asked & u) / len(u) for u in self._units[i] if u), default=0.0) for i in rows])
        if len(asked) < 2 and not overlap.any():
            return []  # one character or word sharing nothing with any attribute: a suffix (北方町), not a question
        cosine = np.zeros(len(rows))
        usable = self._prototypes is not None and vector is not None and self._prototypes.shape[1] == vector.shape[0]
        if usable:
            cosine = self._prototypes[rows] @ vector
        if not usable and not self.use_overlap:
            return []
        if not usable:
            score = overlap
        elif not self.use_overlap:
            score = cosine
        else:
            score = self.overlap_weight * overlap + (1 - self.overlap_weight) * cosine
        shifted = np.exp((score - score.max()) / self.temperature)
        probability = shifted / shifted.sum()
        if probability.max() < 2.0 / len(rows) and len(rows) > 1:
            return []  # nothing tells the attributes apart: no better than a guess, so no attribute is asked
        ranked, mass = [], 0.0
        for i in np.argsort(-probability)[:MAX_ATTRIBUTES]:
            ranked.append(RankedAttribute(self._names[rows[i]], round(float(probability[i]), 4),
                                          round(float(overlap[i]), 4), round(float(cosine[i]), 4)))
            mass += probability[i]
            if mass >= MASS:
                break
        return ranked
