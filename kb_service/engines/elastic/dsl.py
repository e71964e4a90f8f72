"""SearchPlan → Elasticsearch query DSL: pure functions, so the JSON a plan becomes can be read and tested.

Clause names travel as `_name` (`<clause>#<n>`), and searches ask for `include_named_queries_score`, so a
hit's text score comes back clause by clause for explain, exactly as the embedded engine reports it.
"""

from __future__ import annotations

import time

import numpy as np

from scoring.expressions import PAINLESS_VARIABLES
from scoring.formula import Formula
from scoring.plan import (
    TEXT_FIELDS,
    BoolFilter,
    Clause,
    ExistsFilter,
    Filter,
    NotExpiredFilter,
    RangeFilter,
    SearchPlan,
    SortKey,
    TermFilter,
)

VECTOR_FIELD = "vector"
NAME_SEPARATOR = "#"
SOURCE_EXCLUDES = {"excludes": [VECTOR_FIELD, *TEXT_FIELDS]}


def render_filter(each: Filter) -> dict:
    """One plan filter as a filter-context query (dates stay in the mapping's `yyyy-MM-dd HH:mm:ss`)."""
    if isinstance(each, NotExpiredFilter):
        return {"bool": {"should": [{"bool": {"must_not": {"exists": {"field": "expires_at"}}}},
                                    {"range": {"expires_at": {"gt": each.now}}}],
                         "minimum_should_match": 1}}
    if isinstance(each, RangeFilter):
        bounds = {"gt": each.gt, "gte": each.gte, "lt": each.lt, "lte": each.lte}
        return {"range": {each.field: {k: v for k, v in bounds.items() if v is not None}}}
    if isinstance(each, ExistsFilter):
        return {"exists": {"field": each.field}}
    if isinstance(each, BoolFilter):
        body: dict = {key: [render_filter(part) for part in parts]
                      for key, parts in (("must", each.must), ("should", each.should), ("must_not", each.must_not))
                      if parts}
        if each.should:
            body["minimum_should_match"] = 1
        return {"bool": body}
    values = list(each.values)
    if len(values) == 1:
        return {"term": {each.field: values[0]}}
    return {"terms": {each.field: values}}


def render_clause(clause: Clause, number: int) -> dict:
    body = {"query" if clause.kind != "term" else "value": clause.query, "boost": clause.boost,
            "_name": f"{clause.name}{NAME_SEPARATOR}{number}"}
    return {clause.kind: {clause.field: body}}


def clause_name(named: str) -> str:
    """The plan's clause name from a `_name` this module gave it."""
    return named.rsplit(NAME_SEPARATOR, 1)[0]


def filter_context(plan: SearchPlan) -> list[dict]:
    """Every filter of the plan, including "at least one predicted category", as non-scoring clauses."""
    filters = [render_filter(f) for f in plan.filters]
    if plan.required_any:
        filters.append({"bool": {"should": [render_filter(TermFilter(c.field, (c.query,))) for c in plan.required_any],
                                 "minimum_should_match": 1}})
    return filters


def render_bool(plan: SearchPlan, text_required: bool, ids: list[str] | None = None,
                restrict: dict | None = None) -> dict:
    """The filtered bool query: filters, required category clauses, scoring should clauses.

    `text_required` keeps only documents some text clause matches (fast mode's text top-N); without it every
    filtered document matches, scoring 0 when no clause does."""
    clauses = list(plan.required_any) + list(plan.should)
    rendered = [render_clause(c, n) for n, c in enumerate(clauses)]
    required = rendered[:len(plan.required_any)]
    should = rendered[len(plan.required_any):]
    query: dict = {"filter": [render_filter(f) for f in plan.filters]}
    if ids is not None:
        query["filter"].append({"ids": {"values": ids}})
    if restrict is not None:
        query["filter"].append(restrict)
    if required:
        query["must"] = [{"bool": {"should": required, "minimum_should_match": 1}}]
    if should:
        query["should"] = should
        if text_required:
            query["minimum_should_match"] = 1
    return {"bool": query}


def matching_query(plan: SearchPlan, nearest: list[str]) -> dict:
    """The plan's matching set inside its filters: a text clause other than a category matches, or the
    record is among the `nearest` ids (the knn top-N)."""
    should = [render_clause(c, n) for n, c in enumerate(plan.matching_clauses())]
    should.append({"ids": {"values": nearest}})
    return {"bool": {"should": should, "minimum_should_match": 1}}


def matching_aggregations(plan: SearchPlan, nearest: list[str]) -> dict:
    """`matching`: how many records are in the matching set, with the plan's facets counted over them
    (most frequent first, ties by value as the embedded engine orders them)."""
    facets = {field: {"terms": {"field": field, "size": plan.facet_size, "shard_size": max(100, plan.facet_size * 10),
                                "order": [{"_count": "desc"}, {"_key": "asc"}]}} for field in plan.facets}
    return {"matching": {"filter": matching_query(plan, nearest), **({"aggs": facets} if facets else {})}}


def facet_counts(plan: SearchPlan, matching: dict) -> dict[str, list[tuple[str, int]]]:
    """The facets of a `matching_aggregations` answer, as engines report them."""
    return {field: [(str(bucket["key"]), int(bucket["doc_count"])) for bucket in matching[field]["buckets"]]
            for field in plan.facets}


def render_sort(sort: SortKey) -> list:
    """The field, missing values last, then the score: how every engine orders a sorted search."""
    return [{sort.field: {"order": "desc" if sort.descending else "asc", "missing": "_last"}}, {"_score": "desc"}]


def script_params(formula: Formula, query_vector: np.ndarray, now: float | None = None) -> dict:
    params = {**formula.params(), "query_vector": vector_list(query_vector)}
    if formula.needs("age_days"):
        params["now_millis"] = int((now if now is not None else time.time()) * 1000)
    return params


def render_script_score(plan: SearchPlan, query_vector: np.ndarray,
                        painless_variables: dict[str, str] = PAINLESS_VARIABLES, restrict: dict | None = None) -> dict:
    """`exact` mode: the formula in painless over every document the bool query matches (and `restrict`)."""
    return {"script_score": {
        "query": render_bool(plan, text_required=False, restrict=restrict),
        "script": {"source": plan.formula.painless_source(painless_variables),
                   "params": script_params(plan.formula, query_vector)},
    }}


def knn_filters(plan: SearchPlan, ids: list[str] | None = None) -> list[dict]:
    """The filters an approximate-knn search applies: the plan's, and optionally a set of ids."""
    filters = filter_context(plan)
    if ids is not None:
        filters.append({"ids": {"values": ids}})
    return filters


def vector_list(vector: np.ndarray) -> list[float]:
    """float32 values rounded to 8 decimals: the JSON stays short and cosines move by < 1e-7."""
    return np.round(np.asarray(vector, dtype=np.float64), 8).tolist()
