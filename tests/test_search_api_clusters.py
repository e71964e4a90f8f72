"""Filters, sorts and facets on Elasticsearch and OpenSearch (real nodes) against the embedded engine: 100
filtered queries over the varied KB must count the same matching records, the same facet values and, for
sorted ones, the same sequence of field values; every hit passes its filters.

The matching set's vector half is kept small (20 nearest) so the counts test the matching set rather than
every filtered record; num_candidates covers the KB so the clusters' knn is exact, as the embedded one is.
OpenSearch runs exact mode, where the hits must be the same; the Maven Central Elasticsearch node has no
painless for exact mode's script, so it runs fast mode, whose text top-N breaks BM25 ties in each engine's
document order: there the hits must overlap as much as the fast-mode parity test asks (0.9)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from kb_service.engines.elastic.engine import ClusterEngine
from kb_service.ingest.loading import load_files
from kb_service.runtime import Runtime
from kb_service.serving.request import parse_search
from kb_service.serving.service import SearchService
from tests.conftest import cluster_config, make_config, sample_queries
from tests.search_api_kb import FILTER_CASES, write_varied_kb

SETTINGS = (("  candidates: 200 ", "  candidates: 20 "),
            ("  knn_num_candidates_factor: 2 ", "  knn_num_candidates_factor: 50 "))  # 1,000: the whole KB
SORTS = ["confidence:desc", "update_timestamp", "knowledge", "kid:desc"]


def _queries(kb_file) -> list[dict]:
    """100 dev-style queries over the KB, each with one of the filter cases and three facets, every fourth
    sorted by a field."""
    bodies = []
    for n, query in enumerate(sample_queries(kb_file, 100)):
        body = {"q": query, "size": 10, "filters": FILTER_CASES[n % len(FILTER_CASES)][1],
                "facets": ["category", "attribute", "ref"], "facet_size": 5}
        if n % 4 == 3:
            body["sort"] = SORTS[(n // 4) % len(SORTS)]
        bodies.append(body)
    return bodies


MODES = {"elasticsearch": ("fast", 0.9), "opensearch": ("exact", 0.99)}


@pytest.fixture(scope="module", params=list(MODES))
def engines(request, tmp_path_factory, small_kb_file):
    url = request.getfixturevalue(f"{request.param}_url")
    directory = tmp_path_factory.mktemp(f"varied-{request.param}")
    kb_file, rows = write_varied_kb(small_kb_file, directory)
    prefix = f"kbt{uuid.uuid4().hex[:8]}"
    settings = (*SETTINGS, ("  mode: exact ", f"  mode: {MODES[request.param][0]} "))
    cluster = cluster_config(request.param, directory / "data", url, prefix, *settings)
    embedded = make_config(directory / "data", *settings)
    load_files(Runtime(cluster), [str(kb_file)])
    load_files(Runtime(embedded), [str(kb_file)])
    yield SearchService(Runtime(cluster)), SearchService(Runtime(embedded)), kb_file, rows, MODES[request.param][1]
    ClusterEngine(cluster, {}).cluster.request("DELETE", f"/{prefix}*", params={"expand_wildcards": "all"},
                                               ignore=(404,))


def test_filtered_queries_count_and_sort_alike_on_every_engine(engines):
    cluster, embedded, kb_file, rows, least_overlap = engines
    keeps = {case[0]: case[2] for case in FILTER_CASES}
    by_kid = {r["kid"]: r for r in rows}
    overlaps, totals = [], []
    for n, body in enumerate(_queries(kb_file)):
        request, _ = parse_search(body, cluster.config)
        got, expected = cluster.search(request), embedded.search(request)
        case = FILTER_CASES[n % len(FILTER_CASES)][0]
        assert got.total == expected.total, (body, got.total, expected.total)
        assert got.facets == expected.facets, body
        assert all(keeps[case](by_kid[h.record.kid]) for h in got.hits), body
        if "sort" in body:
            field = request.sort.field
            assert [getattr(h.record, field) for h in got.hits] == [getattr(h.record, field) for h in expected.hits]
        wanted = {h.record.kid for h in expected.hits}
        overlaps.append(len(wanted & {h.record.kid for h in got.hits}) / max(1, len(wanted)))
        totals.append(got.total)
    print(f"top-10 overlap {np.mean(overlaps):.3f} (min {min(overlaps):.2f}); totals {min(totals)}–{max(totals)} "
          f"of {len(rows)} records")
    assert np.mean(overlaps) >= least_overlap and len(set(totals)) > 10
