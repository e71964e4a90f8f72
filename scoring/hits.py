"""Scored hits and their per-component breakdown, shared by the engines and the rescoring pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class RecordLike(Protocol):
    """What scoring reads of a record (read-only, as the frozen KnowledgeRecord offers it)."""

    @property
    def kid(self) -> str: ...
    @property
    def knowledge(self) -> str: ...
    @property
    def attribute(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def ref(self) -> str: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def update_timestamp(self) -> str: ...
    @property
    def expert_verified(self) -> int: ...
    @property
    def expires_at(self) -> str: ...

    def to_dict(self) -> dict: ...


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
