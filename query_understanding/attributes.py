"""Attribute linking as a ranked decision over the question part of a query (the text outside the entity).

The lexicon (attribute names and YAML synonyms) links what it lists with certainty. Everything else is
ranked: character and word overlap with each attribute's words (each weighted by how few attributes use it)
counts partial matches (保修多久 shares 保修
with 保修期), and the cosine of the question part to a per-attribute prototype (the mean embedding of its
name, synonyms and example questions) reads wordings no list holds. A softmax over the blend gives a
probability per attribute, so a question nobody phrased before still shares the linked-answer boost among
the likeliest attributes instead of falling back to an overview. Attributes come from the KB being served,
so a KB with attributes the code has never seen is ranked the same way.

Each attribute also carries the question forms of its values' shape (query_understanding/value_shapes.py: a
pinyin-valued attribute is what "how is it pronounced" asks for), counted at `shape_weight` of its own words
and combined with them as a second piece of evidence, so a wording no list holds still reaches the attribute
whose values answer it, and among attributes of one shape the one whose own words the question shares wins.

Beside the attributes stands one more class, the overview: a question about the entity as a whole (介绍,
tell me about). It is scored from the same signals against question forms per language that name no
attribute, so "what is this place" resolves to the fact that says what the entity is instead of to the
nearest attribute prototype.
"""

from __future__ import annotations

import math
import re
from collections import Counter
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
    shape_forms: dict[str, tuple[str, ...]] = field(default_factory=dict)  # attribute -> its values' shape's forms
    shape_weight: float = 0.8
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
    _shape_patterns: list[re.Pattern | None] = field(default_factory=list, init=False)
    _shape_prototypes: list[np.ndarray] = field(default_factory=list, init=False)  # per attribute, one per script

    @classmethod
    def build(cls, attributes: Iterable[str], synonyms: dict[str, tuple[str, ...]],
              examples: dict[str, tuple[str, ...]], shapes: dict[str, str] | None = None,
              shape_questions: dict[str, tuple[str, ...]] | None = None, **settings) -> AttributeRanker:
        """`shapes`: each attribute's value shape (from the KB); `shape_questions`: each shape's question forms."""
        shapes, shape_questions = shapes or {}, shape_questions or {}
        words = {a: tuple(dict.fromkeys(normalise_text(w) for w in (a, *synonyms.get(a, ()), *examples.get(a, ()))))
                 for a in sorted(attributes)}
        forms = {a: tuple(dict.fromkeys(normalise_text(w) for w in shape_questions.get(shapes.get(a, ""), ())))
                 for a in words}
        return cls(words, {a: f for a, f in forms.items() if f}, **settings)

    def __post_init__(self):
        self._names = list(self.words)
        self._units = [[units(w, self.stop_words) for w in self.words[a]] for a in self._names]
        self._shape_patterns = [_phrases(self.shape_forms.get(a, ())) for a in self._names]
        forms = [tuple(normalise_text(w) for w in words) for words in self.overview.values() if words]
        self._overview_units = [units(w, self.stop_words) for words in forms for w in words]
        classes = [set().union(*own) for own in self._units]
        classes.append(set().union(*self._overview_units))
        frequency = Counter(unit for members in classes for unit in members)
        self._weights = {unit: math.log((len(classes) + 1) / count) for unit, count in frequency.items()}
        self._totals = {u: sum(self._weights[x] for x in u) for wordings in (*self._units, self._overview_units)
                        for u in wordings}  # each wording's weight, the denominator of its overlap
        if self.embed_many and self._names:
            per_script = {a: [group for group in (tuple(f for f in own if _HAN.search(f)),
                                                  tuple(f for f in own if not _HAN.search(f))) if group]
                          for a in self._names for own in (self.shape_forms.get(a, ()),)}
            shape_groups = sorted({group for groups in per_script.values() for group in groups})
            groups = [*(self.words[a] for a in self._names), *forms, *shape_groups]
            vectors = self.embed_many([w for words in groups for w in words])
            prototypes, position = [], 0
            for words in groups:
                mean = vectors[position:position + len(words)].mean(axis=0)
                prototypes.append(mean / (np.linalg.norm(mean) or 1.0))
                position += len(words)
            stacked = np.stack(prototypes).astype(np.float32)
            names, overview = len(self._names), len(forms)
            self._prototypes = stacked[:names]
            self._overview_prototypes = stacked[names:names + overview]
            of_group = dict(zip(shape_groups, stacked[names + overview:], strict=True))
            self._shape_prototypes = [np.stack([of_group[g] for g in per_script[a]]) if per_script[a]
                                      else np.zeros((0, stacked.shape[1]), np.float32) for a in self._names]

    def _overlap(self, asked: frozenset[str], candidates: list[frozenset[str]]) -> float:
        """The largest share of one candidate wording's units that the question holds, each unit weighted by
        how few classes (attributes, the overview) use it: "how" of "how long" and "how is it pronounced"
        tells the classes apart less than "long" or "pronounced" does."""
        return max((sum(self._weights[x] for x in asked & u) / self._totals[u] for u in candidates if u),
                   default=0.0)

    def rank(self, question: str, vector: np.ndarray | None = None, among: Collection[str] | None = None,
             context: str | None = None) -> Ranking:
        """The likeliest attributes for `question` (normalised), most probable first, and the overview's
        probability, together at most 1; `vector` is the question's embedding when an encoder is at hand,
        `among` the attributes the linked entity can have (None: all)."""
        rows = [i for i, name in enumerate(self._names) if among is None or name in among]
        if not rows:
            return Ranking([], 1.0)
        asked = units(question, self.stop_words)
        phrased = context if context is not None else question
        overlap = np.array([*(_either(self._overlap(asked, self._units[i]), self.shape_weight * bool(
            (pattern := self._shape_patterns[i]) and pattern.search(phrased))) for i in rows),
                            self._overlap(asked, self._overview_units)])
        if len(asked) < 2 and not overlap[:-1].any():
            return Ranking([], 1.0)  # one character or word sharing nothing with any attribute: a suffix (北方町)
        cosine = np.zeros(len(rows) + 1)
        prototypes, overview = self._prototypes, self._overview_prototypes
        usable = prototypes is not None and vector is not None and prototypes.shape[1] == vector.shape[0]
        if prototypes is not None and overview is not None and vector is not None and usable:
            cosine[:-1] = prototypes[rows] @ vector
            for position, i in enumerate(rows):
                if len(self._shape_prototypes[i]):
                    # the shape can raise an attribute, never lower it (a label's forms are not how a country is
                    # asked for), and a blend keeps what tells attributes of one shape apart
                    shaped = float((self._shape_prototypes[i] @ vector).max())
                    blend = (cosine[position] + self.shape_weight * shaped) / (1 + self.shape_weight)
                    cosine[position] = max(cosine[position], blend)
            cosine[-1] = float((overview @ vector).max()) if len(overview) else -1.0
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


def _either(own: float, shape: float) -> float:
    """Overlap with the attribute's own words, or its shape's form found in the question, as two pieces of
    evidence (noisy or): a question with both (有多重: 重 of 重量 and the weight's form 多重) beats one with
    only the shape's, which every attribute of that shape shares."""
    return 1.0 - (1.0 - own) * (1.0 - shape)


def _phrases(forms: Iterable[str]) -> re.Pattern | None:
    """One pattern finding any of `forms` as a whole phrase: a shape's forms are question phrases (多大, how
    far), and their characters one by one (大 of 大概, far of "so far") say nothing about the shape."""
    alternatives = [re.escape(form) if _HAN.search(form) else
                    r"(?<![a-z0-9])" + r"\s+".join(map(re.escape, form.split())) + r"(?![a-z0-9])"
                    for form in sorted(forms, key=len, reverse=True) if form.strip()]
    return re.compile("|".join(alternatives)) if alternatives else None


