"""External rescoring (the design document's 外置打分): an ordered pipeline of strategies from config.yaml.

Each strategy is a registered dataclass whose fields are its YAML parameters; every score change is recorded
as a component on the hit, so explain output still sums to the final score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from scoring.hits import ScoredHit

RESCORING_STRATEGIES: dict[str, type[RescoringStrategy]] = {}


def register_strategy(cls):
    RESCORING_STRATEGIES[cls.strategy] = cls
    return cls


@dataclass(frozen=True)
class RescoreContext:
    null_confidence: float


@dataclass(frozen=True)
class RescoringStrategy:
    strategy: ClassVar[str]
    enabled: bool = True

    def apply(self, hits: list[ScoredHit], context: RescoreContext) -> list[ScoredHit]:
        raise NotImplementedError


@register_strategy
@dataclass(frozen=True)
class ConfidenceBoost(RescoringStrategy):
    """Adds weight x confidence, so reviewed high-confidence knowledge wins ties with extracted guesses."""

    strategy: ClassVar[str] = "confidence_boost"
    weight: float = 0.1

    def apply(self, hits, context):
        for hit in hits:
            confidence = hit.record.confidence
            hit.add("rescore", self.strategy, context.null_confidence if confidence is None else confidence,
                    self.weight)
        return hits


@register_strategy
@dataclass(frozen=True)
class MaxPerEntity(RescoringStrategy):
    """Keeps at most `limit` hits per entity (knowledge name) so one entity cannot fill the page."""

    strategy: ClassVar[str] = "max_per_entity"
    limit: int = 3

    def __post_init__(self):
        if self.limit < 1:
            raise ValueError("limit must be >= 1")

    def apply(self, hits, context):
        seen: dict[str, int] = {}
        kept = []
        for hit in sorted(hits, key=lambda h: -h.score):
            seen[hit.record.knowledge] = seen.get(hit.record.knowledge, 0) + 1
            if seen[hit.record.knowledge] <= self.limit:
                kept.append(hit)
        return kept


@register_strategy
@dataclass(frozen=True)
class MinScore(RescoringStrategy):
    """Drops hits whose score so far is below `threshold`."""

    strategy: ClassVar[str] = "min_score"
    threshold: float = 0.0

    def apply(self, hits, context):
        return [hit for hit in hits if hit.score >= self.threshold]


def rescore(hits: list[ScoredHit], pipeline: tuple[RescoringStrategy, ...], context: RescoreContext
            ) -> list[ScoredHit]:
    for step in pipeline:
        if step.enabled:
            hits = step.apply(hits, context)
    return sorted(hits, key=lambda h: (-h.score, h.record.kid))
