"""Field sorts of hits: missing values last, ties by score, the same order on every engine.

Engines rank candidates with `order_key` (numbers, where lexsort wants them); the service re-sorts the final
hits with `sort_hits` after rescoring has moved their scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from scoring.hits import RecordLike, ScoredHit
from scoring.plan import SortKey


def record_value(record: RecordLike, field: str) -> float | str | None:
    """A record's value of a sort field; None when it has none (a null confidence, an empty timestamp)."""
    value = getattr(record, field)
    return None if value is None or value == "" else value


def order_key(values: Sequence[float | str | None] | np.ndarray, descending: bool) -> np.ndarray:
    """Numbers that ascend in the wanted order, missing values (None, "", NaN) last: texts by their rank
    among `values` (code-point order, which is the UTF-8 byte order Lucene sorts keywords by)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        key = values.astype(np.float64)
    else:
        present = sorted({v for v in values if v is not None and v != ""})
        if present and isinstance(present[0], str):
            rank = {v: float(i) for i, v in enumerate(present)}
            key = np.array([rank.get(v, np.nan) if isinstance(v, str) else np.nan for v in values])
        else:
            key = np.array([np.nan if v is None or v == "" else float(v) for v in values], dtype=np.float64)
    key = -key if descending else key
    return np.where(np.isnan(key), np.inf, key)


def sort_hits(hits: list[ScoredHit], sort: SortKey) -> list[ScoredHit]:
    """`hits` by the field, missing values last, equal values by score (best first)."""
    by_score = sorted(hits, key=lambda hit: -hit.score)
    present = [h for h in by_score if record_value(h.record, sort.field) is not None]
    missing = [h for h in by_score if record_value(h.record, sort.field) is None]
    present.sort(key=lambda hit: cast(Any, record_value(hit.record, sort.field)), reverse=sort.descending)  # stable
    return present + missing
