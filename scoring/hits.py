"""Scored hits and their per-component breakdown, shared by the engines and the rescoring pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class RecordLike(Protocol):
    kid: str
    knowledge: str
    attribute: str
    value: str
    category: str
    ref: str
    confidence: float | None
    update_timestamp: str
    expert_verified: int
    expires_at: str


@dataclass(frozen=True)
class ScoreComponent:
    """One addend of a hit's final score: where it came from, its raw value and weight."""

    stage: str
    name: str
    raw: float
    weight: float
    contribution: float


@dataclass
class ScoredHit:
    record: RecordLike
    score: float
    components: list[ScoreComponent] = field(default_factory=list)
    details: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, name: str, raw: float, weight: float) -> None:
        contribution = raw * weight
        self.components.append(ScoreComponent(stage, name, float(raw), float(weight), float(contribution)))
        self.score += contribution

    def shift_to(self, stage: str, name: str, new_score: float) -> None:
        """Record a non-additive step (normalisation, fusion) as the component that moves the score there."""
        self.components.append(ScoreComponent(stage, name, float(new_score), 1.0, float(new_score - self.score)))
        self.score = float(new_score)
