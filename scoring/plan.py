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
KEYWORD_FIELDS = ("kid", "knowledge", "attribute", "value", "category", "ref")
FLAG_FIELDS = ("del", "available", "expert_verified")
NUMBER_FIELDS = ("confidence",)
DATE_FIELDS = ("create_timestamp", "update_timestamp", "expires_at")
FACET_FIELDS = ("category", "attribute", "knowledge", "ref")
SORT_FIELDS = (*NUMBER_FIELDS, *DATE_FIELDS, "knowledge", "attribute", "category", "kid")
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
class RangeFilter:
    """Keep documents whose number or date field lies within the bounds (dates as TIMESTAMP_FORMAT text);
    a document without the field never does."""

    field: str
    gt: float | str | None = None
    gte: float | str | None = None
    lt: float | str | None = None
    lte: float | str | None = None


@dataclass(frozen=True)
class ExistsFilter:
    """Keep documents that hold a value in the field (a confidence, a timestamp, a non-empty ref)."""

    field: str


@dataclass(frozen=True)
class BoolFilter:
    """Every `must`, none of `must_not`, and at least one of `should` when there are any (Elasticsearch's
    bool with `minimum_should_match: 1` stated, so both engines read `should` alike)."""

    must: tuple[Filter, ...] = ()
    should: tuple[Filter, ...] = ()
    must_not: tuple[Filter, ...] = ()


Filter = TermFilter | NotExpiredFilter | RangeFilter | ExistsFilter | BoolFilter


def filtered_fields(filters: tuple[Filter, ...]) -> set[str]:
    """Every field the filters test, however deeply nested."""
    fields: set[str] = set()
    stack = list(filters)
    while stack:
        each = stack.pop()
        if isinstance(each, BoolFilter):
            stack.extend((*each.must, *each.should, *each.must_not))
        elif not isinstance(each, NotExpiredFilter):
            fields.add(each.field)
    return fields


@dataclass(frozen=True)
class SortKey:
    """Order hits by a record field, missing values last, ties by score (the default order is score alone)."""

    field: str
    descending: bool = False


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
    """`candidates` is fast mode's top-N per signal (at least offset + size); `nearest` the vector half of
    the matching set (records some text clause other than a category matches, or among the `nearest`
    vectors), over which `total` and `facets` count, the same however deep a page is; `window` is how many
    engine hits go to rescoring."""

    filters: tuple[Filter, ...]
    required_any: tuple[Clause, ...]
    should: tuple[Clause, ...]
    vector_text: str
    formula: Formula
    mode: Mode
    size: int
    offset: int
    candidates: int
    window: int
    nearest: int = 200
    sort: SortKey | None = None
    facets: tuple[str, ...] = ()
    facet_size: int = 10

    def matching_clauses(self) -> tuple[Clause, ...]:
        """The text clauses that make a record part of the matching set: every should clause but the
        category ones, which hold for a whole category and say nothing about the query's words."""
        return tuple(c for c in self.should if c.field != "category")
