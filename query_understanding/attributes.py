"""Attribute linking as a ranked decision over the question part of a query (the text outside the entity).

The lexicon (attribute names and YAML synonyms) links what it lists with certainty. Everything else is
ranked: character and word overlap with each attribute's words counts partial matches (保修多久 shares 保修
with 保修期), and the cosine of the question part to a per-attribute prototype (the mean embedding of its
name, synonyms and example questions) reads wordings no list holds. A softmax over the blend gives a
probability per attribute, so a question nobody phrased before still shares the linked-answer boost among
the likeliest attributes instead of falling back to an overview. Attributes come from the KB being served,
so a KB with attributes the code has never seen is ranked the same way.

Beside the attributes stands one more class, the overview: a question about the entity as a whole (介绍,
tell me about). It is scored from the same signals against question forms per language that name no
attribute, so "what is this place" resolves to the fact that says what the entity is instead of to the
nearest attribute prototype.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from query_understanding.normalise import normalise_text

ATTRIBUTE_SIGNALS = ("overlap", "embedding")
MAX_ATTRIBUTES = 3  # a question shares its boost among at most this many attributes …
MASS = 0.9  # … the fewest whose probabilities add up to this
_HAN = re.compile(r"[\u4e00-\u9fff]")
# Question parts (what is left of a query once the entity and stop words are taken out) that ask about an
# entity as a whole, per language; none names an attribute, so they hold for any KB.
OVERVIEW_QUESTIONS = {
    "zh": ("介绍", "简介", "概况", "概述", "基本情况", "基本信息", "详细资料", "百科", "整体情况", "全貌", "背景"),
    "en": ("tell me about", "overview", "introduction", "summary", "general information", "describe",
           "background", "all about"),
}
_LATIN_WORD = re.compile(r"[a-z0-9]{2,}")


@lru_cache(maxsize=8)
def _function_characters(stop_words: frozenset[str]) -> frozenset[str]:
    return frozenset(ch for word in stop_words if len(word) > 1 for ch in _HAN.findall(word))


def units(text: str, stop_words: frozenset[str] = frozenset()) -> frozenset[str]:
    """What overlap is counted in: Chinese characters one by one, Latin-script words whole; neither a stop
    word nor a character of a Chinese stop phrase (怎 and 么 of 怎么): question words are shared by questions
    about any attribute (怎么读, 怎么回事), so they tell none apart."""
    function = _function_characters(stop_words)
    return (frozenset(ch for ch in _HAN.findall(text) if ch not in function)
            | frozenset(w for w in _LATIN_WORD.findall(text) if w not in stop_words))


@dataclass(frozen=True)
class RankedAttribute:
    name: str
    probability: float
    overlap: float
    cosine: float


@dataclass(frozen=True)
class Ranking:
    """The likeliest attributes, and the probability that the question asks about the entity as a whole."""

    attributes: list[RankedAttribute]
    overview: float


@dataclass
class AttributeRanker:
    """Ranks a KB's attributes for a question part; `embed_many` is the query encoder (None: overlap only)."""

    words: dict[str, tuple[str, ...]]  # attribute -> its name, synonyms and example questions, normalised
    overlap_weight: float = 0.5
    temperature: float = 0.05
    embed_many: Callable[[list[str]], np.ndarray] | None = None
    stop_words: frozenset[str] = frozenset()
    use_overlap: bool = True
    overview: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(OVERVIEW_QUESTIONS))
    _units: list[list[frozenset[str]]] = field(default_factory=list, init=False)
    _prototypes: np.ndarray | None = field(default=None, init=False)
    _overview_units: list[frozenset[str]] = field(default_factory=list, init=False)
    _overview_prototypes: np.ndarray | None = field(default=None, init=False)  # one per language

    @classmethod
    def build(cls, attributes: Iterable[str], synonyms: dict[str, tuple[str, ...]],
              examples: dict[str, tuple[str, ...]], **settings) -> AttributeRanker:
        words = {a: tuple(dict.fromkeys(normalise_text(w) for w in (a, *synonyms.get(a, ()), *examples.get(a, ()))))
                 for a in sorted(attributes)}
        return cls(words, **settings)

    def __post_init__(self):
        self._names = list(self.words)
        self._units = [[units(w, self.stop_words) for w in self.words[a]] for a in self._names]
        forms = [tuple(normalise_text(w) for w in words) for words in self.overview.values() if words]
        self._overview_units = [units(w, self.stop_words) for words in forms for w in words]
        if self.embed_many and self._names:
            groups = [*(self.words[a] for a in self._names), *forms]
            vectors = self.embed_many([w for words in groups for w in words])
            prototypes, position = [], 0
            for words in groups:
                mean = vectors[position:position + len(words)].mean(axis=0)
                prototypes.append(mean / (np.linalg.norm(mean) or 1.0))
                position += len(words)
            stacked = np.stack(prototypes).astype(np.float32)
            self._prototypes, self._overview_prototypes = stacked[:len(self._names)], stacked[len(self._names):]

    def rank(self, question: str, vector: np.ndarray | None = None, among: Collection[str] | None = None
             ) -> Ranking:
        """The likeliest attributes for `question` (normalised), most probable first, and the overview's
        probability, together at most 1; `vector` is the question's embedding when an encoder is at hand,
        `among` the attributes the linked entity can have (None: all)."""
        rows = [i for i, name in enumerate(self._names) if among is None or name in among]
        if not rows:
            return Ranking([], 1.0)
        asked = units(question, self.stop_words)
        overlap = np.array([*(max((len(asked & u) / len(u) for u in self._units[i] if u), default=0.0) for i in rows),
                            max((len(asked & u) / len(u) for u in self._overview_units if u), default=0.0)])
        if len(asked) < 2 and not overlap[:-1].any():
            return Ranking([], 1.0)  # one character or word sharing nothing with any attribute: a suffix (北方町)
        cosine = np.zeros(len(rows) + 1)
        usable = self._prototypes is not None and vector is not None and self._prototypes.shape[1] == vector.shape[0]
        if usable:
            cosine[:-1] = self._prototypes[rows] @ vector
            cosine[-1] = float((self._overview_prototypes @ vector).max()) if len(self._overview_prototypes) else -1.0
        if not usable and not self.use_overlap:
            return Ranking([], 1.0)
        if not usable:
            score = overlap
        elif not self.use_overlap:
            score = cosine
        else:
            score = self.overlap_weight * overlap + (1 - self.overlap_weight) * cosine
        if not self._overview_units:
            score[-1] = -np.inf  # no overview forms: attributes only
        shifted = np.exp((score - score.max()) / self.temperature)
        probability = shifted / shifted.sum()
        if probability[:-1].max() < 2.0 / len(rows) and len(rows) > 1:
            return Ranking([], 1.0)  # nothing tells the attributes apart: no better than a guess
        ranked, mass = [], float(probability[-1])
        for i in np.argsort(-probability[:-1])[:MAX_ATTRIBUTES]:
            if mass >= MASS:
                break
            ranked.append(RankedAttribute(self._names[rows[i]], round(float(probability[i]), 4),
                                          round(float(overlap[i]), 4), round(float(cosine[i]), 4)))
            mass += probability[i]
        return Ranking(ranked, round(float(probability[-1]), 4))
