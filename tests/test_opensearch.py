"""The OpenSearch engine against a real node with painless and k-NN (scripts/os-local or $KB_OS_URL): the
same plans, versions and formula as the embedded engine, `exact` mode running the formula's `script_score`
on the node, and a node that goes away answering 503 until it is back."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from kb_service.engines.elastic.dsl import render_script_score
from kb_service.engines.elastic.engine import ClusterEngine
from kb_service.evaluation import read_queries
from kb_service.http.app import create_app
from kb_service.ingest.loading import load_files
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.planner import SearchRequest, build_plan
from tests.conftest import (
    TcpRelay,
    cluster_config,
    make_config,
    sample_queries,
    shared_file,
    top10_parity,
)

EXACT = ("  mode: exact ", "  mode: exact ")
FAST = ("  mode: exact ", "  mode: fast ")


def _opensearch_config(data_dir, url, prefix, *replacements):
    return cluster_config("opensearch", data_dir, url, prefix, *replacements)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, opensearch_url, small_kb_file):
    """The small KB in OpenSearch and in the embedded engine, one data directory (and cache) for both."""
    data_dir = tmp_path_factory.mktemp("os-data")
    prefix = f"kbo{uuid.uuid4().hex[:8]}"
    os_config = _opensearch_config(data_dir, opensearch_url, prefix, EXACT)
    report = load_files(Runtime(os_config), [str(small_kb_file)])
    load_files(Runtime(make_config(data_dir)), [str(small_kb_file)])
    yield os_config, data_dir, report
    ClusterEngine(os_config, {}).cluster.request("DELETE", f"/{prefix}*", params={"expand_wildcards": "all"},
                                             ignore=(404,))


def test_a_load_creates_a_knn_version_behind_the_alias(loaded):
    os_config, _, report = loaded
    engine = ClusterEngine(os_config, {})
    assert engine.current_name() == report.version and engine.dialect.name == "OpenSearch"
    mapping = engine.cluster.request("GET", f"/{report.version}/_mapping")[report.version]["mappings"]
    assert mapping["properties"]["vector"]["type"] == "knn_vector"
    assert mapping["properties"]["vector"]["method"]["engine"] == "lucene"
    count = engine.cluster.request("GET", f"/{os_config.elasticsearch.read_alias}/_count")["count"]
    assert count == report.records


@pytest.mark.parametrize(("mode", "overlap"), [(EXACT, 0.98), (FAST, 0.95)])
def test_rankings_match_the_embedded_engine(loaded, small_kb_file, mode, overlap):
    os_config, data_dir, _ = loaded
    on_os = SearchService(Runtime(_opensearch_config(data_dir, os_config.elasticsearch.hosts[0],
                                             os_config.elasticsearch.index_prefix, mode)))
    embedded = SearchService(Runtime(make_config(data_dir, mode)))
    overlaps = []
    for query in sample_queries(small_kb_file, 40):
        os_hits = on_os.search(SearchRequest(query=query, size=10)).hits
        local_hits = embedded.search(SearchRequest(query=query, size=10)).hits
        local_top = [h.record.kid for h in local_hits]
        overlaps.append(len({h.record.kid for h in os_hits} & set(local_top)) / max(1, len(local_top)))
        local_score = {h.record.kid: h.score for h in local_hits}
        for hit in os_hits:
            if hit.record.kid in local_score:
                assert hit.score == pytest.approx(local_score[hit.record.kid], abs=1e-4), query
    print(f"{mode[1].split(':')[1].strip()}: top-10 overlap {np.mean(overlaps):.3f} over {len(overlaps)} queries")
    assert np.mean(overlaps) >= overlap


def test_the_script_score_that_runs_on_the_node_is_the_embedded_formula(loaded):
    """The raw `_score` the node's painless computes for each hit equals the embedded engine's engine-stage
    score (the formula before rescoring) for the same record."""
    os_config, data_dir, report = loaded
    service = SearchService(Runtime(os_config))
    embedded = SearchService(Runtime(make_config(data_dir)))
    for query in ("杭州的人口", "东京", "Asia/Tokyo 是哪个城市"):
        parsed = service.understand(query)
        plan = build_plan(parsed, SearchRequest(query=query, size=10), os_config.scoring)
        vector = service._encode_cached(plan.vector_text)
        request = {"query": render_script_score(plan, vector, service.engine.dialect.painless_variables),
                   "size": 10}
        hits = service.engine.cluster.request("POST", f"/{report.version}/_search", request)["hits"]["hits"]
        engine_scores = {h.record.kid: sum(c.contribution for c in h.components if c.stage == "engine")
                         for h in embedded.state.version.execute(plan, vector).hits}
        assert hits and all(hit["_id"] in engine_scores for hit in hits)
        for hit in hits:
            assert hit["_score"] == pytest.approx(engine_scores[hit["_id"]], abs=1e-4), (query, hit["_id"])


def test_explain_names_the_clauses_and_sums_to_the_score(loaded):
    os_config, _, _ = loaded
    top = SearchService(Runtime(os_config)).search(SearchRequest(query="杭州的人口", size=5, explain=True)).hits[0]
    assert (top.record.knowledge, top.record.attribute) == ("杭州", "人口")
    assert sum(c.contribution for c in top.components) == pytest.approx(top.score)
    assert {"knowledge_term", "attribute_term", "knowledge_phrase"} <= set(top.details)


def test_a_node_that_goes_away_gives_503_and_service_resumes_when_it_is_back(loaded, opensearch_url, monkeypatch):
    monkeypatch.delenv("KB_OS_URL", raising=False)  # it would win over the relay's address
    os_config, data_dir, _ = loaded
    relay = TcpRelay(int(opensearch_url.rsplit(":", 1)[1]))
    config = _opensearch_config(data_dir, f"http://127.0.0.1:{relay.port}", os_config.elasticsearch.index_prefix)
    client = create_app(Runtime(config), SearchService(Runtime(config)), watch=False).test_client()
    assert client.get("/search", query_string={"q": "上海"}).status_code == 200
    relay.cut()
    down = client.get("/search", query_string={"q": "北京的人口"})
    assert down.status_code == 503 and "OpenSearch" in down.get_json()["error"]["message"]
    assert client.get("/readyz").status_code == 503
    relay.mend()
    assert client.get("/readyz").status_code == 200
    back = client.get("/search", query_string={"q": "北京的人口"})
    assert back.status_code == 200 and back.get_json()["hits"][0]["knowledge"] == "北京"


@pytest.mark.slow
@pytest.mark.parametrize("kb", ["geo", "idioms"])
def test_dev_query_parity_in_both_modes_on_a_full_kb(kb, opensearch_url, full_kb):
    """The acceptance figures of the OpenSearch engine: bulk rate, top-10 parity with the embedded engine on
    every third dev query of the shared KB (every task in its share: an exact script_score over the whole KB
    is the slowest search a node runs) in exact mode and in fast mode, and the server-side latency of each."""
    kb_file = str(shared_file(kb, "kb.jsonl.gz"))
    queries = read_queries(shared_file(kb, "queries.dev.jsonl"))[::3]
    embedded = full_kb(kb)
    data_dir = embedded.data_dir
    prefix = f"kbo{uuid.uuid4().hex[:8]}"
    os_config = _opensearch_config(data_dir, opensearch_url, prefix)
    try:
        os_report = load_files(Runtime(os_config), [kb_file])
        assert embedded.records == os_report.records
        figures = [f"\n{kb}: {os_report.records} records; OpenSearch load {os_report.seconds:.1f}s "
                   f"({os_report.records_per_second:,.0f} records/s, vectors from cache)"]
        for mode, wanted in ((EXACT, 0.98), (FAST, 0.95)):
            parity = top10_parity(SearchService(Runtime(_opensearch_config(data_dir, opensearch_url, prefix, mode))),
                                  SearchService(Runtime(make_config(data_dir, mode))), [q.text for q in queries])
            figures.append(f"{mode[1].split(':')[1].strip()}: {len(queries)} dev queries, "
                           f"{parity.describe('OpenSearch', 'embedded')}")
            assert parity.overlap >= wanted, figures
        print("\n".join(figures))
    finally:
        ClusterEngine(os_config, {}).cluster.request("DELETE", f"/{prefix}*", params={"expand_wildcards": "all"},
                                                 ignore=(404,))
