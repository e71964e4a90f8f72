"""The backend-neutral search plan: what to find and how to score it, never how an engine does it.

Field names are the index fields of mappings/knowledge.json; text clauses carry pre-segmented text
(tokens joined by spaces) so every engine sees exactly the tokens the service produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from scoring.formula import Formula

ClauseKind = Literal["term", "match", "match_phrase"]
TEXT_FIELD_SOURCES = {"knowledge_phrase": "knowledge", "attribute_phrase": "attribute", "value_phrase": "value"}
TEXT_FIELDS = tuple(TEXT_FIELD_SOURCES)  # each holds the service's segmentation of its source keyword field
KEYWORD_FIELDS = ("kid", "knowledge", "attribute", "value", "category")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"  # how timestamp fields are written in records, indices and filters


class Mode(StrEnum):
    """How an engine executes a plan: the formula on every filtered record, or on the text and vector top-N."""

    EXACT = "exact"
    FAST = "fast"


@dataclass(frozen=True)
class TermFilter:
    """Keep documents whose keyword or flag field equals one of the values (no effect on the score)."""

    field: str
    values: tuple[str | int, ...]


@dataclass(frozen=True)
class NotExpiredFilter:
    """Keep documents whose `expires_at` is empty or later than `now` ('YYYY-MM-DD HH:MM:SS')."""

    now: str


@dataclass(frozen=True)
class Clause:
    """One scoring clause: Elasticsearch's term / match / match_phrase with a boost."""

    name: str
    kind: ClauseKind
    field: str
    query: str
    boost: float


@dataclass(frozen=True)
class SearchPlan:
    """`candidates` is fast mode's top-N per signal; `window` how many engine hits go to rescoring."""

    filters: tuple[TermFilter | NotExpiredFilter, ...]
    required_any: tuple[Clause, ...]
    should: tuple[Clause, ...]
    vector_text: str
    formula: Formula
    mode: Mode
    size: int
    offset: int
    candidates: int
    window: int
