"""External rescoring (外置打分, applied after the engine): an ordered pipeline of strategies from config.yaml.

Each strategy is a registered dataclass whose fields are its YAML parameters; every score change is recorded
as a component on the hit, so explain output still sums to the final score.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from query_understanding.normalise import duplicate_key
from query_understanding.parsed_query import LINK_THRESHOLD
from scoring.hits import ScoredHit
from scoring.settings import check_settings, setting

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
RESCORING_STRATEGIES: dict[str, type[RescoringStrategy]] = {}


@dataclass(frozen=True)
class RescoreContext:
    """What strategies may consult besides the hits: `entities` and `attributes` map the stored names the
    query linked to (query understanding's LinkedSpan names) to the probability that they are meant;
    `overview` is the probability that the query asks about its entity as a whole (by default 1 when no
    attribute is linked, else 0)."""

    null_confidence: float
    now: datetime = field(default_factory=datetime.now)
    entities: Mapping[str, float] = field(default_factory=dict)
    attributes: Mapping[str, float] = field(default_factory=dict)
    overview: float | None = None

    def __post_init__(self):
        if self.overview is None:
            object.__setattr__(self, "overview", 0.0 if self.attributes else 1.0)

    @classmethod
    def of(cls, null_confidence: float, entities: Iterable, attributes: Iterable = (),
           overview: float | None = None) -> RescoreContext:
        """From linked spans, the likeliest link of each name counting."""
        return cls(null_confidence, entities=_likeliest(entities), attributes=_likeliest(attributes),
                   overview=overview)


def _likeliest(spans: Iterable) -> dict[str, float]:
    best: dict[str, float] = {}
    for span in spans:
        best[span.name] = max(best.get(span.name, 0.0), span.confidence)
    return best


def answer_probability(record, context: RescoreContext) -> float:
    """How likely the record is what the question asked for as understood: its entity linked and its
    attribute asked, each as probable as its link."""
    return context.entities.get(record.knowledge, 0.0) * context.attributes.get(record.attribute, 0.0)


def answers_question(record, context: RescoreContext) -> bool:
    """The record is, more likely than not, the linked entity's linked attribute."""
    return answer_probability(record, context) >= LINK_THRESHOLD


def source_of(record) -> str:
    """What tells one entity's records from a namesake's: the source reference, else the entity name."""
    return record.ref or record.knowledge


def _days_between(earlier: str, later: datetime) -> float | None:
    if not earlier:
        return None
    return (later - datetime.strptime(earlier, TIMESTAMP_FORMAT)).total_seconds() / 86400.0


@dataclass(frozen=True)
class RescoringStrategy:
    """A step of the rescoring pipeline; a subclass names itself (`class MinScore(RescoringStrategy,
    strategy="min_score")`), which registers it for config.yaml, and declares its settings' limits with
    `setting`. A base without a name (AdditiveStrategy) is not registered."""

    strategy: ClassVar[str]
    enabled: bool = True

    def __init_subclass__(cls, strategy: str | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if strategy is not None:
            cls.strategy = strategy
            RESCORING_STRATEGIES[strategy] = cls

    def __post_init__(self):
        check_settings(self)

    def apply(self, hits: list[ScoredHit], context: RescoreContext) -> list[ScoredHit]:
        raise NotImplementedError


@dataclass(frozen=True)
class AdditiveStrategy(RescoringStrategy):
    """Adds weight x value to every hit, recorded as one component named after the strategy."""

    weight: float = 0.1

    def value(self, hit: ScoredHit, context: RescoreContext) -> float:
        raise NotImplementedError

    def weight_for(self, hit: ScoredHit) -> float:
        return self.weight

    def apply(self, hits, context):
        for hit in hits:
            hit.add("rescore", self.strategy, self.value(hit, context), self.weight_for(hit))
        return hits


@dataclass(frozen=True)
class ConfidenceBoost(AdditiveStrategy, strategy="confidence_boost"):
    """Adds weight x confidence, so reviewed high-confidence knowledge wins ties with extracted guesses."""

    def value(self, hit, context):
        confidence = hit.record.confidence
        return context.null_confidence if confidence is None else confidence


@dataclass(frozen=True)
class LinkedAnswerBoost(RescoringStrategy, strategy="linked_answer_boost"):
    """Adds `weight` to the record that answers the question as understood, a linked entity's linked attribute
    (杭州的人口 → 杭州 / 人口), and `sibling_share` of it to the other records from the same source (`ref`),
    which tells the entity apart from a namesake (哥伦比亚的首都: the country's records, not the US city's).
    A query that names an entity and asks for nothing in particular (杭州, 画蛇添足) is answered by the
    attribute `overview_attributes` gives for the record's category, the fact that says what the entity is
    (a city's country, an idiom's meaning); categories not listed have no such answer. The boost scales
    with how probable the links are: a weak link (one word of a sentence) barely moves a record, and a
    question whose attribute is uncertain shares it among the likeliest attributes and the overview, each
    by its probability, so a question about the entity as a whole puts the overview record first.

    Text scores cannot rank these alone: an attribute term scores by idf, so a common attribute such as 拼音
    adds less than the entity's name inside another record's value (道听途说怎么读 put 例句 above 拼音)."""

    weight: float = 0.2
    sibling_share: float = setting(0.5, at_least=0.0, at_most=1.0)
    overview_attributes: dict[str, str] = field(default_factory=dict)

    def _answers(self, record, context: RescoreContext) -> float:
        share = answer_probability(record, context)
        if self.overview_attributes.get(record.category) == record.attribute:
            share += (context.overview or 0.0) * context.entities.get(record.knowledge, 0.0)
        return min(share, 1.0)

    def apply(self, hits, context):
        answers = [self._answers(hit.record, context) for hit in hits]
        sources: dict[str, float] = {}
        for hit, answer in zip(hits, answers, strict=True):
            if answer and hit.record.ref:
                sources[hit.record.ref] = max(sources.get(hit.record.ref, 0.0), answer)
        for hit, answer in zip(hits, answers, strict=True):
            value = max(answer, self.sibling_share * sources.get(hit.record.ref, 0.0))
            hit.add("rescore", self.strategy, round(value, 4), self.weight)
        return hits


@dataclass(frozen=True)
class MaxPerEntity(RescoringStrategy, strategy="max_per_entity"):
    """Keeps at most `limit` hits per entity (knowledge name) so one entity cannot fill the page."""

    limit: int = setting(3, at_least=1)

    def apply(self, hits, context):
        seen: dict[str, int] = {}
        kept = []
        for hit in sorted(hits, key=lambda h: -h.score):
            seen[hit.record.knowledge] = seen.get(hit.record.knowledge, 0) + 1
            if seen[hit.record.knowledge] <= self.limit:
                kept.append(hit)
        return kept


@dataclass(frozen=True)
class MinScore(RescoringStrategy, strategy="min_score"):
    """Drops hits whose score so far is below `threshold`."""

    threshold: float = 0.0

    def apply(self, hits, context):
        return [hit for hit in hits if hit.score >= self.threshold]


@dataclass(frozen=True)
class ExpertVerifiedBoost(AdditiveStrategy, strategy="expert_verified_boost"):
    """Adds `weight` to records an expert has verified (the document's 专家知识 boost)."""

    weight: float = 0.2

    def value(self, hit, context):
        return float(hit.record.expert_verified)


@dataclass(frozen=True)
class RecencyDecay(AdditiveStrategy, strategy="recency_decay"):
    """Adds weight x 2^(-age / half_life) on `update_timestamp`: fresher knowledge ranks higher."""

    half_life_days: float = setting(365.0, above=0.0)

    def value(self, hit, context):
        age = _days_between(hit.record.update_timestamp, context.now)
        return 0.0 if age is None else 0.5 ** (max(age, 0.0) / self.half_life_days)


@dataclass(frozen=True)
class ExpiryDecay(AdditiveStrategy, strategy="expiry_decay"):
    """Subtracts up to `weight` as a hot entry nears `expires_at` (linearly over the last `window_days`)."""

    weight: float = 0.2
    window_days: float = setting(7.0, above=0.0)

    def value(self, hit, context):
        since = _days_between(hit.record.expires_at, context.now)
        return 0.0 if since is None else min(1.0, max(0.0, 1.0 + since / self.window_days))

    def weight_for(self, hit):
        return -self.weight


@dataclass(frozen=True)
class CategoryWeights(AdditiveStrategy, strategy="category_weights"):
    """Adds a per-category amount from a table (`default` for categories not listed)."""

    weights: dict[str, float] = field(default_factory=dict)
    default: float = 0.0

    def value(self, hit, context):
        return 1.0

    def weight_for(self, hit):
        return self.weights.get(hit.record.category, self.default)


@dataclass(frozen=True)
class NearDuplicateCollapse(RescoringStrategy, strategy="near_duplicate_collapse"):
    """Keeps the best of records that differ only by particles (的/了/地/得), spacing or punctuation."""

    def apply(self, hits, context):
        kept, seen = [], set()
        for hit in sorted(hits, key=lambda h: -h.score):
            record = hit.record
            key = tuple(duplicate_key(text) for text in (record.knowledge, record.attribute, record.value))
            if key not in seen:
                seen.add(key)
                kept.append(hit)
        return kept


@dataclass(frozen=True)
class EntityGrouping(RescoringStrategy, strategy="entity_grouping"):
    """Adds `weight` x the best score so far among the hits from the same source (`ref`, else the entity name):
    an entity ranks by its best record and its other records follow, since they answer together (an English
    definition that matches an idiom's 解释 brings its 拼音 and 出处 along). With a weight well above the score
    range the page is grouped entity by entity; namesakes have their own `ref` and stay apart."""

    weight: float = setting(1.0, at_least=0.0)

    def apply(self, hits, context):
        sources = [source_of(hit.record) for hit in hits]
        best: dict[str, float] = {}
        for hit, source in zip(hits, sources, strict=True):
            best[source] = max(best.get(source, hit.score), hit.score)
        for hit, source in zip(hits, sources, strict=True):
            hit.add("rescore", self.strategy, best[source], self.weight)
        return hits


NORMALISATION_METHODS = ("minmax", "zscore", "rrf")


@dataclass(frozen=True)
class ScoreNormalisation(RescoringStrategy, strategy="normalise"):
    """Rescales scores over the hit list: min-max to [0, 1], z-score, or reciprocal rank fusion of the
    text and vector rankings (1/(k + rank) summed), which ignores score scales altogether."""

    method: str = setting("minmax", one_of=NORMALISATION_METHODS)
    rrf_k: int = 60

    def apply(self, hits, context):
        if not hits:
            return hits
        scores = [h.score for h in hits]
        if self.method == "rrf":
            fused = [0.0] * len(hits)
            for signal in ("text", "cosine"):
                order = sorted(range(len(hits)), key=lambda i: -_component(hits[i], signal))
                for rank, index in enumerate(order, start=1):
                    fused[index] += 1.0 / (self.rrf_k + rank)
            targets = fused
        elif self.method == "minmax":
            low, high = min(scores), max(scores)
            targets = [(s - low) / (high - low) if high > low else 1.0 for s in scores]
        else:
            mean = sum(scores) / len(scores)
            spread = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
            targets = [(s - mean) / spread if spread else 0.0 for s in scores]
        for hit, target in zip(hits, targets, strict=True):
            hit.shift_to("rescore", f"{self.strategy}:{self.method}", target)
        return hits


def _component(hit: ScoredHit, name: str) -> float:
    return next((c.raw for c in hit.components if c.name == name), 0.0)


def rescore(hits: list[ScoredHit], pipeline: tuple[RescoringStrategy, ...], context: RescoreContext
            ) -> list[ScoredHit]:
    for step in pipeline:
        if step.enabled:
            hits = step.apply(hits, context)
    return sorted(hits, key=lambda h: (-h.score, h.record.kid))
