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
from scoring.settings import check_settings, setting

FORMULA_TERMS: dict[str, type[FormulaTerm]] = {}


@dataclass(frozen=True)
class FormulaTerm:
    """A term of the formula; a subclass names itself (`class CosineTerm(FormulaTerm, term="cosine")`), which
    registers it for config.yaml, and declares its settings' limits with `setting`."""

    term: ClassVar[str]
    weight: float = 1.0

    def __init_subclass__(cls, term: str, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls.term = term
        FORMULA_TERMS[term] = cls

    def __post_init__(self):
        check_settings(self)

    def raw(self) -> Expr:
        """The unweighted value of this term for one document."""
        raise NotImplementedError

    def params(self) -> dict[str, float]:
        return {}

    def describe(self) -> dict:
        return {"term": self.term, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True)
class CosineTerm(FormulaTerm, term="cosine"):
    """Cosine similarity of query and record vectors, shifted to [0, 1] because engine scores must be >= 0."""

    def raw(self) -> Expr:
        return (Var("cosine") + 1.0) / 2.0


TEXT_NORMALISATIONS = ("saturation", "logistic", "legacy_sigmoid")


@dataclass(frozen=True)
class TextScoreTerm(FormulaTerm, term="text"):
    """The bool query's BM25 `_score` squashed into [0, 1] so it can be weighed against cosine.

    `saturation` is s/(s+k); `logistic` is 1/(1+e^-(s-midpoint)/scale); `legacy_sigmoid` is the original
    formula's painless `sigmoid(1, Math.E, _score)` = 1/(1+e^s), kept only so old configs can be measured:
    it falls as text relevance rises.
    """

    normalise: str = setting("saturation", one_of=TEXT_NORMALISATIONS)
    k: float = setting(20.0, above=0.0)
    midpoint: float = 20.0
    scale: float = setting(5.0, above=0.0)

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


@dataclass(frozen=True)
class ConfidenceTerm(FormulaTerm, term="confidence"):
    """The record's confidence; a null confidence reads as the configured `null_confidence`.

    `inverse_log` is the original formula's literal `1 / Math.log(confidence)`: infinite at 1 and negative
    below 1, kept so the check at load can show why it is refused. `guarded_inverse_log` is 1/ln(1 + e - c),
    finite on [0, 1] and rising with confidence.
    """

    transform: str = setting("log1p", one_of=CONFIDENCE_TRANSFORMS)

    def raw(self) -> Expr:
        confidence = Var("confidence")
        if self.transform == "linear":
            return confidence
        if self.transform == "log1p":
            return call("log1p", confidence)
        if self.transform == "inverse_log":
            return 1.0 / call("log", confidence)
        return 1.0 / call("log", 1.0 + math.e - confidence)


@dataclass(frozen=True)
class RecencyTerm(FormulaTerm, term="recency"):
    """Exponential decay on the age of `update_timestamp`: 1 when fresh, 1/2 after `half_life_days`."""

    half_life_days: float = setting(365.0, above=0.0)

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
