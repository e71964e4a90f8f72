"""The in-engine scoring formula: a weighted sum of named terms, declared in config.yaml under `formula`.

This module is the single definition of the formula. Each term is a small registered dataclass that
returns an expression; `Formula` sums them and compiles the sum to painless (Elasticsearch) or evaluates
it over arrays (embedded engine), so both engines rank by the same arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any, ClassVar

from scoring.expressions import PAINLESS_VARIABLES, Expr, Param, Var, call, evaluate, render_painless, variables_of

FORMULA_TERMS: dict[str, type[FormulaTerm]] = {}


def register_term(cls):
    FORMULA_TERMS[cls.term] = cls
    return cls


@dataclass(frozen=True)
class FormulaTerm:
    term: ClassVar[str]
    weight: float = 1.0

    def raw(self) -> Expr:
        """The unweighted value of this term for one document."""
        raise NotImplementedError

    def params(self) -> dict[str, float]:
        return {}

    def describe(self) -> dict:
        return {"term": self.term, **{f.name: getattr(self, f.name) for f in fields(self)}}


@register_term
@dataclass(frozen=True)
class CosineTerm(FormulaTerm):
    """Cosine similarity of query and record vectors, shifted to [0, 1] because engine scores must be >= 0."""

    term: ClassVar[str] = "cosine"

    def raw(self) -> Expr:
        return (Var("cosine") + 1.0) / 2.0


TEXT_NORMALISATIONS = ("saturation", "logistic", "legacy_sigmoid")


@register_term
@dataclass(frozen=True)
class TextScoreTerm(FormulaTerm):
    """The bool query's BM25 `_score` squashed into [0, 1] so it can be weighed against cosine.

    `saturation` is s/(s+k); `logistic` is 1/(1+e^-(s-midpoint)/scale); `legacy_sigmoid` is the original
    formula's painless `sigmoid(1, Math.E, _score)` = 1/(1+e^s), kept only so old configs can be measured:
    it falls as text relevance rises.
    """

    term: ClassVar[str] = "text"
    normalise: str = "saturation"
    k: float = 20.0
    midpoint: float = 20.0
    scale: float = 5.0

    def __post_init__(self):
        if self.normalise not in TEXT_NORMALISATIONS:
            raise ValueError(f"normalise must be one of {', '.join(TEXT_NORMALISATIONS)}")
        if self.k <= 0 or self.scale <= 0:
            raise ValueError("k and scale must be > 0")

    def raw(self) -> Expr:
        score = Var("text_score")
        if self.normalise == "saturation":
            return score / (score + Param("text_k"))
        if self.normalise == "logistic":
            return 1.0 / (1.0 + call("exp", (Param("text_midpoint") - score) / Param("text_scale")))
        return 1.0 / (1.0 + call("exp", score))

    def params(self) -> dict[str, float]:
        return {"text_k": self.k, "text_midpoint": self.midpoint, "text_scale": self.scale}


CONFIDENCE_TRANSFORMS = ("linear", "log1p", "guarded_inverse_log", "inverse_log")


@register_term
@dataclass(frozen=True)
class ConfidenceTerm(FormulaTerm):
    """The record's confidence; a null confidence reads as the configured `null_confidence`.

    `inverse_log` is the original formula's literal `1 / Math.log(confidence)`: infinite at 1 and negative
    below 1, kept so the check at load can show why it is refused. `guarded_inverse_log` is 1/ln(1 + e - c),
    finite on [0, 1] and rising with confidence.
    """

    term: ClassVar[str] = "confidence"
    transform: str = "log1p"

    def __post_init__(self):
        if self.transform not in CONFIDENCE_TRANSFORMS:
            raise ValueError(f"transform must be one of {', '.join(CONFIDENCE_TRANSFORMS)}")

    def raw(self) -> Expr:
        confidence = Var("confidence")
        if self.transform == "linear":
            return confidence
        if self.transform == "log1p":
            return call("log1p", confidence)
        if self.transform == "inverse_log":
            return 1.0 / call("log", confidence)
        return 1.0 / call("log", 1.0 + math.e - confidence)


@register_term
@dataclass(frozen=True)
class RecencyTerm(FormulaTerm):
    """Exponential decay on the age of `update_timestamp`: 1 when fresh, 1/2 after `half_life_days`."""

    term: ClassVar[str] = "recency"
    half_life_days: float = 365.0

    def __post_init__(self):
        if self.half_life_days <= 0:
            raise ValueError("half_life_days must be > 0")

    def raw(self) -> Expr:
        return call("exp", -math.log(2.0) * Var("age_days") / Param("half_life_days"))

    def params(self) -> dict[str, float]:
        return {"half_life_days": self.half_life_days}


@dataclass(frozen=True)
class Formula:
    terms: tuple[FormulaTerm, ...]
    null_confidence: float = 0.5

    def __post_init__(self):
        names = [t.term for t in self.terms]
        if len(set(names)) != len(names):
            raise ValueError("each formula term may appear once")
        if not 0.0 <= self.null_confidence <= 1.0:
            raise ValueError("null_confidence must be in [0, 1]")

    def with_weights(self, weights: dict[str, float]) -> Formula:
        """The same formula with some term weights replaced (e.g. per query intent)."""
        unknown = set(weights) - {t.term for t in self.terms}
        if unknown:
            raise ValueError(f"no formula term named {', '.join(sorted(unknown))}")
        return replace(self, terms=tuple(replace(t, weight=weights.get(t.term, t.weight)) for t in self.terms))

    def expression(self) -> Expr:
        total: Expr | None = None
        for term in self.terms:
            weighted = Param(f"w_{term.term}") * term.raw()
            total = weighted if total is None else total + weighted
        return total if total is not None else Param("zero")

    def params(self) -> dict[str, float]:
        out: dict[str, float] = {"null_confidence": self.null_confidence, "zero": 0.0}
        for term in self.terms:
            out[f"w_{term.term}"] = term.weight
            out.update(term.params())
        return out

    def painless_source(self, variables: dict[str, str] = PAINLESS_VARIABLES) -> str:
        return render_painless(self.expression(), variables)

    def evaluate_terms(self, variables: dict, functions: dict) -> dict[str, tuple[float, Any]]:
        """Per term: (weight, raw values over the candidates); their weighted sum is the engine score."""
        params = self.params()
        return {t.term: (t.weight, evaluate(t.raw(), variables, params, functions)) for t in self.terms}

    @cached_property
    def variables(self) -> frozenset[str]:
        """The document inputs the terms read; computed once, asked on every query."""
        return frozenset().union(*(variables_of(t.raw()) for t in self.terms))

    def needs(self, variable: str) -> bool:
        return variable in self.variables
