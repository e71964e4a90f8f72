"""The Elasticsearch backend against a real node (scripts/es-local or $KB_ES_URL): mapping, bulk load,
alias swap and rollback under search load, filters, text clauses, fast mode, failures, parity with the
embedded engine. The node has no lang-painless module, so `exact` mode is checked up to the script engine.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from elasticsearch import BadRequestError, Elasticsearch

from kb_service.config import ConfigError
from kb_service.engines.elastic.dsl import render_script_score
from kb_service.engines.elastic.engine import BulkLoadError, ClusterEngine
from kb_service.evaluation import read_queries
from kb_service.http.app import create_app
from kb_service.ingest.loading import build_version, category_centroids, load_files
from kb_service.ingest.readers import read_records
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from query_understanding.dictionary import KbDictionary
from query_understanding.segmenter import Segmenter
from scoring.planner import SearchRequest, build_plan
from tests.conftest import (
    REPO,
    TcpRelay,
    config_text,
    elasticsearch_config,
    make_config,
    read_jsonl,
    sample_queries,
    searching_in_background,
    shared_file,
    top10_parity,
    wait_for,
    write_jsonl,
)


def _prefix() -> str:
    return f"kbt{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def es_prefix(elasticsearch_url):
    """A fresh index prefix; every index it names is deleted afterwards."""
    prefix = _prefix()
    yield prefix
    client = Elasticsearch(elasticsearch_url)
    client.options(ignore_status=404).indices.delete(index=f"{prefix}*", expand_wildcards="all")


@pytest.fixture(scope="module")
def loaded_pair(tmp_path_factory, elasticsearch_url, small_kb_file):
    """The small KB loaded into Elasticsearch and into the embedded engine (fast mode, one shared cache)."""
    data_dir = tmp_path_factory.mktemp("es-data")
    prefix = _prefix()
    fast = ("  mode: exact ", "  mode: fast ")
    es_config = elasticsearch_config(data_dir, elasticsearch_url, prefix, fast)
    embedded_config = make_config(data_dir, fast)
    report = load_files(Runtime(es_config), [str(small_kb_file)])
    load_files(Runtime(embedded_config), [str(small_kb_file)])
    yield es_config, embedded_config, report
    ClusterEngine(es_config, {}).client.options(ignore_status=404).indices.delete(index=f"{prefix}*",
                                                                             expand_wildcards="all")


def test_load_creates_mapping_fills_the_version_and_points_the_alias(loaded_pair, small_kb_file):
    es_config, _, report = loaded_pair
    store = ClusterEngine(es_config, {})
    client = store.client
    records = read_records([str(small_kb_file)]).records
    assert report.records == len(records) and report.version.startswith(es_config.elasticsearch.index_prefix)
    assert store.current_name() == report.version
    assert list(client.indices.get_alias(name=es_config.elasticsearch.read_alias)) == [report.version]
    assert client.count(index=es_config.elasticsearch.read_alias)["count"] == len(records)
    docs = client.indices.stats(index=report.version, metric="docs")["indices"][report.version]["primaries"]["docs"]
    assert docs["deleted"] == 0  # BM25 statistics count deleted documents: a served version must hold none
    mapping = client.indices.get_mapping(index=report.version)[report.version]["mappings"]["properties"]
    assert mapping["vector"]["dims"] == 512 and mapping["vector"]["similarity"] == "cosine"
    assert mapping["knowledge_phrase"]["analyzer"] == "whitespace"
    assert mapping["ref"]["type"] == "keyword" and mapping["ref"].get("index", True)  # filters and facets read it
    settings = client.indices.get_settings(index=report.version)[report.version]["settings"]["index"]
    assert settings["refresh_interval"] == "1s" and settings["translog"]["durability"] == "request"
    assert settings["search"]["slowlog"]["threshold"]["query"]["warn"] == "1s"
    sample = records[len(records) // 2]
    stored = client.get(index=report.version, id=sample.kid)["_source"]
    assert stored["knowledge"] == sample.knowledge and stored["value"] == sample.value
    assert " ".join(stored["knowledge_phrase"].split()) == stored["knowledge_phrase"]


def test_fast_mode_ranks_like_the_embedded_engine(loaded_pair, small_kb_file):
    es_config, embedded_config, _ = loaded_pair
    on_es, embedded = SearchService(Runtime(es_config)), SearchService(Runtime(embedded_config))
    overlaps, same_first = [], 0
    for query in sample_queries(small_kb_file):
        es_hits = on_es.search(SearchRequest(query=query, size=10)).hits
        local_hits = embedded.search(SearchRequest(query=query, size=10)).hits
        es_top = [h.record.kid for h in es_hits]
        local_top = [h.record.kid for h in local_hits]
        overlaps.append(len(set(es_top) & set(local_top)) / max(1, len(local_top)))
        same_first += es_top[:1] == local_top[:1]
        if es_top[:1] == local_top[:1]:
            assert es_hits[0].score == pytest.approx(local_hits[0].score, rel=1e-3), query
    print(f"top-10 overlap {np.mean(overlaps):.3f}, same first hit {same_first}/{len(overlaps)}")
    assert np.mean(overlaps) >= 0.9
    assert same_first >= 0.9 * len(overlaps)


def test_explain_on_elasticsearch_sums_to_the_score_and_names_the_clauses(loaded_pair):
    es_config, _, _ = loaded_pair
    response = SearchService(Runtime(es_config)).search(SearchRequest(query="杭州的人口", size=5, explain=True))
    top = response.hits[0]
    assert (top.record.knowledge, top.record.attribute) == ("杭州", "人口")
    assert sum(c.contribution for c in top.components) == pytest.approx(top.score)
    assert {"knowledge_term", "attribute_term", "knowledge_phrase"} <= set(top.details)
    clauses = sum(v for k, v in top.details.items() if k != "bm25")
    assert clauses == pytest.approx(top.details["bm25"], rel=1e-6)


def test_aliases_stored_with_the_version_link_an_english_name(loaded_pair):
    es_config, _, _ = loaded_pair
    service = SearchService(Runtime(es_config))
    assert service.state.version.dictionary.aliases["hangzhou"] == "杭州"
    top = service.search(SearchRequest(query="Hangzhou 人口", size=3)).hits[0].record
    assert (top.knowledge, top.attribute) == ("杭州", "人口")


def test_answer_expansion_ranks_alike_on_both_engines(tmp_path, elasticsearch_url, es_prefix, capital_kb_file):
    fast = ("  mode: exact ", "  mode: fast ")
    rankings = []
    for config in (elasticsearch_config(tmp_path / "data", elasticsearch_url, es_prefix, fast),
                   make_config(tmp_path / "data", fast)):
        load_files(Runtime(config), [str(capital_kb_file)])
        hits = SearchService(Runtime(config)).search(SearchRequest(query="哥伦比亚的首都是哪里", size=20)).hits
        rankings.append(([h.record.kid for h in hits], [h.score for h in hits]))
    (es_kids, es_scores), (kids, scores) = rankings
    assert es_kids == kids and es_scores == pytest.approx(scores, rel=1e-4)
    assert kids[3:6] == [f"geo:city:3688689:{attribute}" for attribute in ("国家", "英文名", "人口")]


def test_category_filter_and_response_total(loaded_pair):
    es_config, _, _ = loaded_pair
    service = SearchService(Runtime(es_config))
    categories = {h.record.category for h in service.search(SearchRequest(query="上海", size=50)).hits}
    assert categories == {"城市"}
    nothing = service.search(SearchRequest(query="上海", size=10, categories=("没有这个类别",)))
    assert nothing.hits == [] and nothing.total == 0


def test_deleted_unavailable_and_expired_records_are_never_found(tmp_path, elasticsearch_url, es_prefix):
    base = {"category": "城市", "confidence": 0.9, "update_timestamp": "2026-01-01 00:00:00"}
    rows = [
        {**base, "kid": "live", "knowledge": "甲城", "attribute": "人口", "value": "100"},
        {**base, "kid": "deleted", "knowledge": "甲城", "attribute": "面积", "value": "5", "del": 1},
        {**base, "kid": "unavailable", "knowledge": "甲城", "attribute": "别名", "value": "甲", "available": 0},
        {**base, "kid": "expired", "knowledge": "甲城", "attribute": "市长", "value": "某", "expires_at": "2020-01-01"},
        {**base, "kid": "future", "knowledge": "甲城", "attribute": "邮编", "value": "1", "expires_at": "2999-01-01"},
    ]
    path = write_jsonl(tmp_path / "flags.jsonl", rows)
    config = elasticsearch_config(tmp_path / "data", elasticsearch_url, es_prefix, ("  mode: exact ", "  mode: fast "))
    load_files(Runtime(config), [str(path)])
    found = {h.record.kid for h in SearchService(Runtime(config)).search(SearchRequest(query="甲城", size=10)).hits}
    assert found == {"live", "future"}


def test_exact_mode_renders_a_script_score_that_elasticsearch_parses_up_to_the_script_engine(loaded_pair):
    """This node has no lang-painless: the request must get past the query parser and fail only on the
    missing script language (a production node with the module runs it)."""
    es_config, _, report = loaded_pair
    service = SearchService(Runtime(es_config))
    parsed = service.understand("杭州的人口")
    plan = build_plan(parsed, SearchRequest(query="杭州的人口", mode="exact"), es_config.scoring)
    query = render_script_score(plan, service._encode_cached(plan.vector_text))
    assert "cosineSimilarity(params.query_vector, 'vector')" in query["script_score"]["script"]["source"]
    with pytest.raises(BadRequestError) as refused:
        ClusterEngine(es_config, {}).client.search(index=report.version, query=query, size=3)
    assert "painless" in str(refused.value).lower()
    assert "parsing_exception" not in str(refused.value)


def test_bulk_errors_name_the_records_and_leave_the_served_version(tmp_path, elasticsearch_url, es_prefix,
                                                                   small_kb_file):
    config = elasticsearch_config(tmp_path / "data", elasticsearch_url, es_prefix)
    first = load_files(Runtime(config), [str(small_kb_file)]).version
    store = ClusterEngine(config, {})
    records = read_records([str(small_kb_file)]).records[:50]
    vectors = np.random.default_rng(1).normal(size=(50, 512)).astype(np.float32)
    vectors[[3, 17]] = np.nan  # Elasticsearch's JSON parser refuses NaN: two real per-document rejections
    dictionary = KbDictionary.from_pairs(((r.knowledge, r.category) for r in records), {r.attribute for r in records})
    with pytest.raises(BulkLoadError) as failed:
        store.build(records, vectors, Segmenter(dictionary.user_words()).segmented, dictionary,
                    category_centroids(records, np.nan_to_num(vectors)), {"records": 50, "dims": 512})
    assert {kid for kid, _ in failed.value.failures} == {records[3].kid, records[17].kid}
    assert store.current_name() == first
    assert [v.name for v in store.versions()] == [first]
    assert list(store.client.indices.get(index=f"{es_prefix}_v*")) == [first]


def test_alias_swap_and_rollback_while_searches_run(tmp_path, elasticsearch_url, es_prefix, small_kb_file):
    config = elasticsearch_config(tmp_path / "data", elasticsearch_url, es_prefix, ("  mode: exact ", "  mode: fast "))
    rows = read_jsonl(small_kb_file)
    first = load_files(Runtime(config), [str(small_kb_file)]).version
    with searching_in_background(SearchService(Runtime(config)), "上海的人口") as load:
        second_path = write_jsonl(tmp_path / "second.jsonl", rows[: len(rows) // 2])
        second = load_files(Runtime(config), [str(second_path)]).version
        store = Runtime(config).engine
        assert store.current_name() == second
        store.switch(first)
        assert store.current_name() == first
        store.switch(second)
        wait_for(lambda: second in load.versions)  # the searches follow the last switch too
    print(f"{load.count} searches across two switches, {len(load.errors)} errors")
    assert load.errors == []
    assert load.count > 10 and load.versions <= {first, second} and second in load.versions


def test_keep_versions_prunes_old_indices_but_never_the_served_one(tmp_path, elasticsearch_url, es_prefix,
                                                                   small_kb_file):
    config = elasticsearch_config(tmp_path / "data", elasticsearch_url, es_prefix,
                                  ("  keep_versions: 3", "  keep_versions: 2"))
    records = read_records([str(small_kb_file)]).records[:200]
    names = [build_version(Runtime(config), records).name for _ in range(3)]
    store = ClusterEngine(config, {})
    assert [v.name for v in store.versions()] == names[1:]
    assert sorted(store.client.indices.get(index=f"{es_prefix}_v*")) == names[1:]
    assert store.current_name() == names[2]


def test_elasticsearch_down_gives_not_ready_and_a_fast_json_503(loaded_pair, elasticsearch_url, monkeypatch):
    monkeypatch.delenv("KB_ES_URL", raising=False)  # it would win over the relay's address
    es_config, _, _ = loaded_pair
    relay = TcpRelay(int(elasticsearch_url.rsplit(":", 1)[1]))
    config = elasticsearch_config(es_config.data_path, f"http://127.0.0.1:{relay.port}",
                                  es_config.elasticsearch.index_prefix, ("  mode: exact ", "  mode: fast "))
    client = create_app(Runtime(config), SearchService(Runtime(config)), watch=False).test_client()
    assert client.get("/readyz").status_code == 200
    assert client.get("/search", query_string={"q": "上海"}).status_code == 200
    relay.cut()
    ready = _first_refusal(lambda: client.get("/readyz"))
    assert ready.status_code == 503 and "does not answer" in ready.get_json()["error"]["message"]
    down = _first_refusal(lambda: client.get("/search", query_string={"q": "北京的人口"}))
    assert down.status_code == 503 and "Elasticsearch" in down.get_json()["error"]["message"]
    assert down.get_json()["error"]["code"] == "engine_unavailable"  # a client can tell it from a deadline
    again = client.get("/search", query_string={"q": "广州的人口"})
    assert (again.status_code, again.get_json()["error"]["code"]) == (503, "engine_unavailable")
    relay.mend()  # the cluster is back: the service resumes by itself, no restart
    back = _first_success(lambda: client.get("/readyz"))
    assert back.status_code == 200 and client.get("/search", query_string={"q": "上海"}).status_code == 200


def _first_success(call, seconds: float = 30.0):
    """The first 200 answer within `seconds` (the last answer when none came)."""
    deadline = time.monotonic() + seconds
    while True:
        response = call()
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def _first_refusal(call, seconds: float = 10.0):
    """The first non-200 answer within `seconds` (the last answer when none came)."""
    deadline = time.monotonic() + seconds
    while True:
        response = call()
        if response.status_code != 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)



@pytest.mark.slow
@pytest.mark.parametrize("kb", ["geo", "idioms"])
def test_full_kb_bulk_load_and_fast_mode_parity_on_dev_queries(kb, elasticsearch_url, es_prefix, full_kb):
    """The acceptance figures of the Elasticsearch backend: bulk throughput and top-10 parity with the
    embedded engine in fast mode, same config, on every dev query of the shared KB."""
    kb_file = str(shared_file(kb, "kb.jsonl.gz"))
    queries = read_queries(shared_file(kb, "queries.dev.jsonl"))
    embedded = full_kb(kb)
    fast = ("  mode: exact ", "  mode: fast ")
    es_config = elasticsearch_config(embedded.data_dir, elasticsearch_url, es_prefix, fast)
    es_report = load_files(Runtime(es_config), [kb_file])
    assert es_report.records == embedded.records
    assert ClusterEngine(es_config, {}).client.count(index=es_report.version)["count"] == es_report.records
    parity = top10_parity(SearchService(Runtime(es_config)), SearchService(Runtime(make_config(embedded.data_dir,
                                                                                                fast))),
                          [q.text for q in queries])
    print(f"\n{kb}: {es_report.records} records; Elasticsearch load {es_report.seconds:.1f}s "
          f"({es_report.records_per_second:,.0f} records/s, vectors from cache), index "
          f"{es_report.index_bytes / 2**20:.0f} MiB; {len(queries)} dev queries, "
          f"{parity.describe('Elasticsearch', 'embedded')}")
    assert parity.overlap >= 0.9


def test_gated_reload_from_the_review_database_on_elasticsearch(tmp_path, elasticsearch_url, es_prefix,
                                                                small_kb_file):
    from kb_service.reload.review import ReviewDatabase
    from kb_service.reload.run import ReloadRefusedError, run_reload

    hangzhou = "geo:city:1808926:人口"
    canary = ("  canaries: []", f'  canaries: [{{query: 杭州的人口, kid: "{hangzhou}", top_k: 3}}]')
    config = elasticsearch_config(tmp_path / "data", elasticsearch_url, es_prefix, ("  mode: exact ", "  mode: fast "),
                                  canary)
    database = ReviewDatabase(config.reload.database_url(config.paths))
    database.import_records(read_records([str(small_kb_file)]).records, status="approved", reviewer="import")
    served = run_reload(Runtime(config))
    store = ClusterEngine(config, {})
    assert served.status == "succeeded" and store.current_name() == served.version
    kids = [row["kid"] for row in database.listing("approved", limit=10_000)]
    database.set_status(kids[: len(kids) // 2], "rejected", "reviewer")
    with pytest.raises(ReloadRefusedError, match="removed_ratio"):
        run_reload(Runtime(config))
    database.set_status(kids[: len(kids) // 2], "approved", "reviewer")
    database.set_status([hangzhou], "rejected", "reviewer")
    with pytest.raises(ReloadRefusedError, match="canary") as refused:
        run_reload(Runtime(config))
    assert refused.value.run.version not in (None, served.version)
    assert store.current_name() == served.version
    assert list(store.client.indices.get(index=f"{es_prefix}_v*")) == [served.version]


def test_a_formula_the_node_cannot_run_is_a_config_error_naming_the_line(loaded_pair, elasticsearch_url):
    """The integ-test-zip node has no painless: in exact mode (every search runs the script there) the config
    is refused with the formula's file and line; in fast mode the service still serves."""
    es_config, _, _ = loaded_pair
    exact = elasticsearch_config(es_config.data_path, elasticsearch_url, es_config.elasticsearch.index_prefix)
    engine = ClusterEngine(exact, {})
    if engine.open(engine.current_name()).formula_problem(exact.scoring.formula) is None:
        pytest.skip("this node runs painless")
    with pytest.raises(ConfigError) as refused:
        SearchService(Runtime(exact))
    assert refused.value.problems[0].startswith("config.yaml:") and "scoring.formula" in refused.value.problems[0]
    assert "painless" in refused.value.problems[0]
    assert SearchService(Runtime(es_config)).search(SearchRequest(query="上海", size=1)).hits


def _lease_config_file(tmp_path: Path, name: str, url: str, prefix: str, kb_file: Path) -> Path:
    """A config file for one 'service host': its own data directory, the shared cluster, reload from files."""
    data_dir = tmp_path / name
    make_config(data_dir)  # links the session's embedding cache into the new data directory
    path = tmp_path / f"{name}.yaml"
    path.write_text(config_text(
        ("data_dir: data", f"data_dir: {data_dir}"), ("  kind: embedded ", "  kind: elasticsearch "),
        ("  hosts: [http://127.0.0.1:9200]", f"  hosts: [{url}]"),
        ("  index_prefix: knowledge ", f"  index_prefix: {prefix} "),
        ("  read_alias: knowledge_current_reader", f"  read_alias: {prefix}_current_reader"),
        ("  meta_index: knowledge_meta ", f"  meta_index: {prefix}_meta "),
        ("  reload_lease_s: 60 ", "  reload_lease_s: 3 "),
        ("  files: []  ", f"  files: [{kb_file}]  ")), encoding="utf-8")
    return path


def _scheduled_reload_in_a_process(config_path: Path) -> subprocess.Popen:
    code = ("import sys; from kb_service.runtime import Runtime; "
            "from kb_service.reload.schedule import scheduled_reload; scheduled_reload(Runtime.start(sys.argv[1]))")
    return subprocess.Popen([sys.executable, "-c", code, str(config_path)], cwd=REPO)


def test_the_reload_lock_is_cluster_wide_and_expires_with_a_dead_holder(tmp_path, elasticsearch_url, es_prefix,
                                                                      small_kb_file):
    """Two service hosts (separate data directories, one cluster): while one holds the reload lease the
    other's scheduled reload records `skipped` and leaves the alias alone; a holder killed with -9 frees
    the lease once it expires (3 s here), and the next reload takes it over and runs."""
    from kb_service.config import load_config
    from kb_service.reload.run import ReloadBusyError, history_of, reload_lock

    first = load_config(_lease_config_file(tmp_path, "host-a", elasticsearch_url, es_prefix, small_kb_file))
    second_path = _lease_config_file(tmp_path, "host-b", elasticsearch_url, es_prefix, small_kb_file)
    second = load_config(second_path)
    with reload_lock(Runtime(first).engine):
        with pytest.raises(ReloadBusyError, match="holds the reload lease"), reload_lock(Runtime(second).engine):
            pass
        assert _scheduled_reload_in_a_process(second_path).wait(timeout=300) == 0
        assert [run.status for run in history_of(Runtime(second)).runs()] == ["skipped"]
        assert Runtime(second).engine.current_name() is None
    assert _scheduled_reload_in_a_process(second_path).wait(timeout=300) == 0
    assert [run.status for run in history_of(Runtime(second)).runs()] == ["succeeded", "skipped"]
    served = Runtime(second).engine.current_name()

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from kb_service.runtime import Runtime; from kb_service.reload.run import reload_lock\n"
        "with reload_lock(Runtime.start(sys.argv[1]).engine):\n    print('held', flush=True); time.sleep(600)"),
        str(second_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ReloadBusyError), reload_lock(Runtime(first).engine):
        pass
    holder.kill()  # SIGKILL: no release, the lease just stops being renewed
    holder.wait()
    time.sleep(3.5)
    assert _scheduled_reload_in_a_process(_lease_config_file(
        tmp_path, "host-a2", elasticsearch_url, es_prefix, small_kb_file)).wait(timeout=300) == 0
    assert Runtime(first).engine.current_name() not in (None, served)
