"""The search API a front end uses, on the embedded engine through the real app: filters, sort, facets, the
matching set's total, field selection, highlights and errors naming the path.

The KB (tests/search_api_kb.py) varies every filterable field; each filter's expected records come from a
Python predicate over the rows, so a filter that keeps too much or too little fails."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from kb_service.http.app import create_app
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from tests.conftest import loaded, make_config
from tests.search_api_kb import FILTER_CASES, MARKUP, servable, write_varied_kb

QUERY = "人口"


@pytest.fixture(scope="module")
def varied(tmp_path_factory, small_kb_file):
    directory = tmp_path_factory.mktemp("varied")
    kb_file, rows = write_varied_kb(small_kb_file, directory)
    return loaded(directory / "data", kb_file), rows


def _client(data_dir, candidates: int):
    """The app over the varied KB; `candidates` is the vector half of the matching set (scoring.candidates)."""
    config = make_config(data_dir, ("  candidates: 200 ", f"  candidates: {candidates} "))
    return create_app(Runtime(config), service=SearchService(Runtime(config)), watch=False).test_client()


@pytest.fixture(scope="module")
def every_record(varied):
    """Candidates beyond the KB's size: every filtered record is in the matching set."""
    return _client(varied[0], 1000)


@pytest.fixture(scope="module")
def few_nearest(varied):
    """Five vector candidates: the matching set is the text matches and the five nearest records."""
    return _client(varied[0], 5)


def search(client, **body) -> dict:
    response = client.post("/search", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def matching_set(client, **body) -> list[dict]:
    """Every hit of the matching set, paged through in kid order."""
    hits, offset = [], 0
    while True:
        page = search(client, **body, sort="kid", size=100, **{"from": offset})
        hits += page["hits"]
        offset += 100
        if offset >= page["total"]:
            assert len(hits) == page["total"]
            return hits


@pytest.mark.parametrize(("filters", "keeps"), [case[1:] for case in FILTER_CASES], ids=[c[0] for c in FILTER_CASES])
def test_a_filter_keeps_exactly_the_records_it_describes(every_record, varied, filters, keeps):
    expected = {r["kid"] for r in servable(varied[1]) if keeps(r)}
    assert 0 < len(expected) < len(servable(varied[1]))
    body = search(every_record, q=QUERY, filters=filters, size=100)
    assert body["total"] == len(expected) and body["total_relation"] == "eq"
    assert {h["kid"] for h in matching_set(every_record, q=QUERY, filters=filters)} == expected


def test_total_counts_the_records_the_query_matches_not_the_whole_kb(few_nearest, varied):
    """Text matches and the five nearest vectors, far fewer than the KB; every one a page can reach."""
    rows = servable(varied[1])
    entity = rows[10]["knowledge"]
    body = search(few_nearest, q=f"{entity}的人口")
    named = [r for r in rows if r["knowledge"] == entity]
    assert len(named) <= body["total"] < len(rows) // 2
    assert {r["kid"] for r in named} <= {h["kid"] for h in matching_set(few_nearest, q=f"{entity}的人口")}


@pytest.mark.parametrize("sort", ["confidence:desc", "update_timestamp", "knowledge:asc", {"field": "confidence"}])
def test_a_sort_orders_by_the_field_missing_last_and_ties_by_score(every_record, sort):
    field, _, order = (sort["field"], None, sort.get("order", "asc")) if isinstance(sort, dict) else sort.partition(":")
    hits = search(every_record, q=QUERY, sort=sort, size=100)["hits"]
    values = [h[field] for h in hits]
    present = [v for v in values if v not in (None, "")]
    assert values[:len(present)] == present, "missing values come last"
    assert present == sorted(present, reverse=order == "desc")
    for before, after in pairwise(hits):
        if before[field] == after[field]:
            assert before["score"] >= after["score"]
    by_score = search(every_record, q=QUERY, size=100)["hits"]
    assert [h["kid"] for h in hits] != [h["kid"] for h in by_score]


def test_facets_count_the_matching_records(few_nearest):
    body = search(few_nearest, q="首尔的人口", facets=["category", "attribute", "ref"], facet_size=3)
    everything = matching_set(few_nearest, q="首尔的人口")
    for field in ("category", "attribute", "ref"):
        counts = Counter(h[field] for h in everything if h[field])
        expected = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:3]
        assert [(f["value"], f["count"]) for f in body["facets"][field]] == expected


def test_fields_choose_what_a_hit_carries(every_record):
    hits = search(every_record, q=QUERY, fields=["kid", "value"], size=3)["hits"]
    assert all(set(h) == {"rank", "score", "components", "kid", "value"} for h in hits)
    get = every_record.get("/search", query_string={"q": QUERY, "fields": "kid,knowledge", "size": 2})
    assert set(get.get_json()["hits"][0]) == {"rank", "score", "components", "kid", "knowledge"}


def test_highlights_mark_the_matched_words_and_escape_the_record(every_record, varied):
    entity = servable(varied[1])[10]["knowledge"]
    top = search(every_record, q=f"{entity}的人口", highlight=True, size=1)["hits"][0]
    assert top["highlight"]["knowledge"] == f"<em>{entity}</em>"
    assert top["highlight"]["attribute"] == "<em>人口</em>"
    row = next(r for r in varied[1] if r["value"].endswith(MARKUP))
    name = row["value"].removesuffix(MARKUP)
    hits = search(every_record, q=name, size=10, highlight={"fields": ["value"], "pre_tag": "[", "post_tag": "]"})
    value = next(h for h in hits["hits"] if h["kid"] == row["kid"])["highlight"]["value"]
    assert value == f"[{name}] &lt;i&gt;&amp;&lt;/i&gt;"


@pytest.mark.parametrize(("body", "field", "code"), [
    ({"filters": [{"range": {"confidence": {"gte": "high"}}}]}, "filters[0].range.confidence.gte", "not_a_number"),
    ({"filters": [{"term": {"attribute": "人口"}}, {"near": {}}]}, "filters[1]", "invalid_filter"),
    ({"filters": [{"bool": {"must": [{"term": {"password": "x"}}]}}]}, "filters[0].bool.must[0].term.password",
     "unknown_field"),
    ({"filters": [{"term": {"ref": "a", "kid": "b"}}]}, "filters[0].term", "one_field"),
    ({"filters": [{"range": {"update_timestamp": {"lt": "yesterday"}}}]}, "filters[0].range.update_timestamp.lt",
     "not_a_date"),
    ({"filters": [{"range": {"confidence": {}}}]}, "filters[0].range.confidence", "required"),
    ({"filters": [{"term": {"expert_verified": "maybe"}}]}, "filters[0].term.expert_verified", "invalid_choice"),
    ({"sort": "vector"}, "sort", "invalid_choice"),
    ({"facets": ["value"]}, "facets[0]", "invalid_choice"),
    ({"fields": ["password"]}, "fields[0]", "invalid_choice"),
    ({"highlight": {"pre_tag": "x" * 65}}, "highlight.pre_tag", "too_long"),
    ({"size": 2.5}, "size", "not_an_integer"),
])
def test_a_bad_parameter_is_a_400_naming_its_path_and_code(every_record, body, field, code):
    response = every_record.post("/search", json={"q": QUERY, **body})
    error = response.get_json()["error"]
    assert response.status_code == 400 and (error["field"], error["code"]) == (field, code), error


def test_filters_nested_too_deep_or_too_many_are_refused_before_searching(every_record):
    deep: dict = {"term": {"attribute": "人口"}}
    for _ in range(9):
        deep = {"bool": {"must": [deep]}}
    error = every_record.post("/search", json={"q": QUERY, "filters": [deep]}).get_json()["error"]
    assert error["code"] == "too_deep"
    many = [{"bool": {"should": [{"term": {"attribute": str(n)}} for n in range(40)]}}] * 2
    error = every_record.post("/search", json={"q": QUERY, "filters": many}).get_json()["error"]
    assert (error["code"], error["field"]) == ("too_many", "filters[1].bool.should[24]")
