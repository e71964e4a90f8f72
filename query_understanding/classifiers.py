"""Intent and category classifiers: YAML rules blended with embedding prototypes.

Rules are precise where they fire (an entity and an attribute were linked: a lookup); prototypes, built
from example queries (intents) or from the KB's own record vectors (categories), give a probability for
everything else. Vectors are unit length, so a dot product is a cosine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from query_understanding.normalise import normalise_text
from query_understanding.parsed_query import LinkedSpan

INTENTS = ("attribute_lookup", "entity_overview", "open_question")
LINK_CONDITIONS = ("entity", "attribute", "no_entity")


@dataclass(frozen=True)
class IntentRule:
    """Fires when every condition in `requires` holds and, if `keywords` are given, one of them occurs."""

    intent: str
    requires: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()

    def __post_init__(self):
        if self.intent not in INTENTS:
            raise ValueError(f"intent must be one of {', '.join(INTENTS)}")
        unknown = set(self.requires) - set(LINK_CONDITIONS)
        if unknown:
            raise ValueError(f"requires must name {', '.join(LINK_CONDITIONS)}; got {', '.join(sorted(unknown))}")

    def fires(self, normalised: str, entities: tuple, attributes: tuple) -> bool:
        state = {"entity": bool(entities), "attribute": bool(attributes), "no_entity": not entities}
        if not all(state[condition] for condition in self.requires):
            return False
        return not self.keywords or any(normalise_text(k) in normalised for k in self.keywords)


DEFAULT_INTENT_RULES = (
    IntentRule("attribute_lookup", requires=("entity", "attribute")),
    IntentRule("entity_overview", requires=("entity",)),
    IntentRule("open_question", requires=("no_entity",)),
)
DEFAULT_INTENT_EXAMPLES = {
    "attribute_lookup": ("北京的人口是多少", "这个成语是什么意思", "巴黎在哪个时区", "东京的英文名"),
    "entity_overview": ("介绍一下上海", "杭州", "关于画蛇添足", "告诉我伦敦的情况"),
    "open_question": ("哪个城市人口最多", "形容很努力的成语", "世界上最大的国家", "比喻做事多此一举"),
}


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    shifted = (scores - scores.max()) / temperature
    weights = np.exp(shifted)
    return weights / weights.sum()


@dataclass
class IntentClassifier:
    rules: tuple[IntentRule, ...]
    examples: dict[str, tuple[str, ...]]
    rule_weight: float
    temperature: float
    embed_many: Callable[[list[str]], np.ndarray] | None = None
    _prototypes: np.ndarray | None = field(default=None, init=False)
    _names: list[str] = field(default_factory=list, init=False)

    def __post_init__(self):
        self._names = [intent for intent in INTENTS if self.examples.get(intent)]
        if self.embed_many and self._names:
            self._prototypes = np.stack([
                _unit(self.embed_many([normalise_text(t) for t in self.examples[intent]]).mean(axis=0))
                for intent in self._names])

    def classify(self, normalised: str, entities: tuple, attributes: tuple,
                 vector: np.ndarray | None) -> tuple[str, float]:
        """The most probable intent and its probability."""
        probabilities = dict.fromkeys(INTENTS, 0.0)
        fired = next((r for r in self.rules if r.fires(normalised, entities, attributes)), None)
        prototypes = self._prototypes
        usable = prototypes is not None and vector is not None and prototypes.shape[1] == vector.shape[0]
        if fired:
            probabilities[fired.intent] += self.rule_weight if usable else 1.0
        if prototypes is not None and vector is not None and usable:
            share = 1.0 - self.rule_weight if fired else 1.0
            for intent, p in zip(self._names, softmax(prototypes @ vector, self.temperature), strict=True):
                probabilities[intent] += share * p
        elif not fired:
            probabilities["open_question"] = 1.0
        best = max(probabilities, key=probabilities.__getitem__)
        return best, round(float(probabilities[best]), 4)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vector)
    return vector / norm if norm else vector


@dataclass
class CategoryClassifier:
    """Blends three votes: the categories of linked entities, YAML keywords, and the nearest KB centroids."""

    entity_categories: dict[str, dict[str, int]]
    keywords: dict[str, tuple[str, ...]]
    centroids: dict[str, np.ndarray]
    prototype_weight: float
    temperature: float

    def classify(self, normalised: str, entities: tuple[LinkedSpan, ...], vector: np.ndarray | None
                 ) -> tuple[dict[str, float], float]:
        """The probability of each category, and how much of it rests on named evidence (confident entity
        links, keywords; 0 to 1) rather than on the centroids alone, which guess a glossary's 45 categories
        right for under half of its queries."""
        votes: dict[str, float] = defaultdict(float)
        named = 0.0
        for span in entities:
            counts = self.entity_categories.get(span.name, {})
            records = sum(counts.values()) or 1
            for category, count in counts.items():
                votes[category] += span.confidence * count / records
            named += span.confidence if span.confident and counts else 0.0
        for category, words in self.keywords.items():
            if any(normalise_text(w) in normalised for w in words):
                votes[category] += 1.0
                named += 1.0
        total = sum(votes.values())
        if total > 0:
            votes = defaultdict(float, {c: (1.0 - self.prototype_weight) * v / total for c, v in votes.items()})
        if self.centroids and vector is not None:
            names = list(self.centroids)
            matrix = np.stack([self.centroids[n] for n in names])
            if matrix.shape[1] == vector.shape[0]:
                share = self.prototype_weight if votes else 1.0
                for name, p in zip(names, softmax(matrix @ vector, self.temperature), strict=True):
                    votes[name] += share * p
        total = sum(votes.values())
        ranked = sorted(votes.items(), key=lambda item: -item[1])  # most common first, ties in insertion order
        probabilities = {c: round(float(v / total), 4) for c, v in ranked} if total else {}
        return probabilities, round(min(1.0, named), 4)
