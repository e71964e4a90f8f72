"""The formula over a set of candidates, as both engines apply it once they know each candidate's inputs.

The embedded engine reads the inputs from its columns, the Elasticsearch backend from search responses;
from there on the arithmetic, the ordering (score, then a stable tie-break) and the per-term components are
this one function, so the two rank alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from scoring.formula import Formula
from scoring.hits import RecordLike, ScoredHit
from scoring.numpy_functions import NUMPY_FUNCTIONS


def formula_variables(formula: Formula, text_score: np.ndarray, cosine: Callable[[], np.ndarray],
                      confidence: np.ndarray, updated_epoch: Callable[[], np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs the formula reads, computing only those it needs; `confidence` holds NaN where null,
    `updated_epoch()` NaN where unknown."""
    variables = {"text_score": text_score}
    if formula.needs("cosine"):
        variables["cosine"] = cosine()
    if formula.needs("age_days"):
        age = (time.time() - updated_epoch()) / 86400.0
        variables["age_days"] = np.clip(np.nan_to_num(age, nan=0.0), 0.0, None)
    if formula.needs("confidence"):
        variables["confidence"] = np.where(np.isnan(confidence), formula.null_confidence, confidence)
    return variables


def top_hits(formula: Formula, variables: dict[str, np.ndarray], window: int, tie_break: np.ndarray,
             record_at: Callable[[int], RecordLike],
             details_of: Callable[[np.ndarray], list[dict[str, float]]],
             order: np.ndarray | None = None) -> list[ScoredHit]:
    """The `window` best candidates by the formula (or first by `order`, a sort's `order_key`, then by the
    formula), each with one engine component per term.

    `tie_break` orders equal scores (the engine's document order); `record_at` takes a candidate's position
    in the input arrays, `details_of` the positions of all the hits at once (so an engine can vectorise).
    """
    terms = formula.evaluate_terms(variables, NUMPY_FUNCTIONS)
    count = tie_break.size
    scores = np.zeros(count, dtype=np.float64)
    for weight, raw in terms.values():
        scores += weight * raw
    window = min(window, count)
    if window == 0:
        return []
    if order is not None:
        top = np.lexsort((tie_break, -scores, order))[:window]
    else:
        top = np.argpartition(-scores, window - 1)[:window]
        top = top[np.lexsort((tie_break[top], -scores[top]))]
    raw_of_top = {name: np.broadcast_to(raw, scores.shape)[top].tolist() for name, (_, raw) in terms.items()}
    hits = []
    details = details_of(top)
    for rank, position in enumerate(top.tolist()):
        hit = ScoredHit(record_at(position), 0.0, details=details[rank])
        for name, (weight, _) in terms.items():
            hit.add("engine", name, raw_of_top[name][rank], weight)
        hits.append(hit)
    return hits


def nonzero_details(bm25: float, clauses: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Explain's text details: the total BM25 `_score` and each clause that contributed to it."""
    details = {"bm25": bm25}
    details.update((name, value) for name, value in clauses if value)
    return details
