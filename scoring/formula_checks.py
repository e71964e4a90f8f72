"""Checks a formula over the whole domain of the KB's fields before it can serve a query.

Two traps of the original formula (docs/design.md) motivate this: painless `sigmoid(1, Math.E, _score)` is
1/(1+e^_score), which falls as text relevance rises, and `1 / Math.log(confidence)` is infinite at 1 and
negative below 1. Every term is swept over each input's domain with the others held at mid-range; a term that
is not finite, that moves against relevance, or that could make the engine score negative (Elasticsearch
refuses negative `script_score` results) is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scoring.expressions import evaluate, variables_of
from scoring.formula import Formula
from scoring.numpy_functions import NUMPY_FUNCTIONS

# Each input's domain and the direction in which it means "more relevant".
DOMAINS = {"cosine": (-1.0, 1.0, +1), "text_score": (0.0, 500.0, +1), "confidence": (0.0, 1.0, +1),
           "age_days": (0.0, 3650.0, -1)}
GRID = 2001


@dataclass(frozen=True)
class FormulaProblem:
    term: str
    message: str

    def __str__(self) -> str:
        return f"term '{self.term}': {self.message}"


def check_formula(formula: Formula) -> list[FormulaProblem]:
    problems: list[FormulaProblem] = []
    params = formula.params()
    lowest_total = 0.0
    for term in formula.terms:
        expression = term.raw()
        inputs = sorted(variables_of(expression))
        middle = {name: np.full(GRID, (DOMAINS[name][0] + DOMAINS[name][1]) / 2) for name in inputs}
        lowest = np.inf
        for name in inputs:
            low, high, direction = DOMAINS[name]
            sweep = np.linspace(low, high, GRID)
            with np.errstate(all="ignore"):
                values = term.weight * np.asarray(evaluate(expression, {**middle, name: sweep}, params,
                                                           NUMPY_FUNCTIONS), dtype=np.float64)
            values = np.broadcast_to(values, sweep.shape)
            bad = ~np.isfinite(values)
            if bad.any():
                problems.append(FormulaProblem(term.term, f"not finite at {name} = {sweep[bad][0]:g}"))
                values, sweep = values[~bad], sweep[~bad]
                if not values.size:
                    continue
            steps = np.diff(values) * direction
            if (steps < -1e-12).any():
                where = sweep[1:][steps < -1e-12][0]
                problems.append(FormulaProblem(
                    term.term, f"moves against relevance: falls as {name} "
                               f"{'rises' if direction > 0 else 'falls'} (at {name} = {where:g})"))
            lowest = min(lowest, float(values.min()))
        if np.isfinite(lowest):
            lowest_total += min(lowest, 0.0)
    if lowest_total < 0:
        problems.append(FormulaProblem("*", f"the score can be negative (down to {lowest_total:g}); "
                                            "Elasticsearch refuses negative script scores"))
    return problems
