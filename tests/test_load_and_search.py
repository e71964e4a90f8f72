"""Load → search round trips on a real small KB with the real encoder, and the atomic version switch."""

import subprocess
import sys
import time

import pytest

from kb_service.errors import InputError
from kb_service.ingest.loading import load_files
from kb_service.ingest.readers import KnowledgeFileError
from kb_service.runtime import Runtime
from kb_service.serving.request import parse_search
from kb_service.serving.service import SearchService
from scoring.planner import SearchRequest
from tests.conftest import make_config, read_jsonl, write_jsonl

ANN_FOR_EVERY_SIZE = ("ann_min_records: 200000", "ann_min_records: 1")


def test_population_question_finds_the_population_record(search_service):
    response = search_service.search(SearchRequest(query="杭州的人口", size=5))
    top = response.hits[0].record
    assert (top.knowledge, top.attribute) == ("杭州", "人口")
    assert response.version.startswith("v000001")


def test_an_english_name_finds_the_entity_through_its_stored_english_name(search_service):
    top = search_service.search(SearchRequest(query="Hangzhou 人口", size=5)).hits[0].record
    assert (top.knowledge, top.attribute) == ("杭州", "人口")


def test_a_bare_name_puts_the_overview_attribute_of_its_category_first(search_service):
    """config.yaml's linked_answer_boost answers 城市 names with 国家; without it 时区 comes first here."""
    hits = search_service.search(SearchRequest(query="伦敦", size=10)).hits
    assert (hits[0].record.knowledge, hits[0].record.attribute) == ("伦敦", "国家")
    assert {h.record.knowledge for h in hits[:len(hits) // 2]} == {"伦敦"}


def test_components_sum_to_the_score(search_service):
    for hit in search_service.search(SearchRequest(query="上海在哪个时区", size=10)).hits:
        assert hit.score == pytest.approx(sum(c.contribution for c in hit.components))
        assert {c.name for c in hit.components} >= {"cosine", "text", "confidence", "confidence_boost"}


def test_scores_are_ranked_and_paging_is_consistent(search_service):
    first = search_service.search(SearchRequest(query="北京", size=10)).hits
    assert [h.score for h in first] == sorted((h.score for h in first), reverse=True)
    second = search_service.search(SearchRequest(query="北京", size=5, offset=5)).hits
    assert [h.record.kid for h in second] == [h.record.kid for h in first[5:]]


def test_a_category_filter_keeps_exactly_that_category(capital_service):
    """The capital KB has 国家 and 城市 records named 伦敦 and 哥伦比亚: a filter keeps one side, all of it."""
    unfiltered = capital_service.search(SearchRequest(query="哥伦比亚", size=50))
    assert {h.record.category for h in unfiltered.hits} == {"国家", "城市"}
    for category in ("国家", "城市"):
        filtered = capital_service.search(SearchRequest(query="哥伦比亚", size=50, categories=(category,)))
        assert filtered.hits and {h.record.category for h in filtered.hits} == {category}
        assert filtered.total == sum(1 for h in unfiltered.hits if h.record.category == category)


def test_fast_mode_agrees_with_exact_on_the_top_hit(search_service):
    exact = search_service.search(SearchRequest(query="东京的英文名", size=10, mode="exact")).hits
    fast = search_service.search(SearchRequest(query="东京的英文名", size=10, mode="fast")).hits
    assert fast[0].record.kid == exact[0].record.kid
    assert len({h.record.kid for h in fast} & {h.record.kid for h in exact}) >= 8


@pytest.mark.parametrize(("params", "field"), [
    ({"q": ""}, "q"), ({"q": "x", "size": "0"}, "size"), ({"q": "x", "size": "ten"}, "size"),
    ({"q": "x", "from": "-1"}, "from"), ({"q": "x", "mode": "warp"}, "mode"), ({"q": "x", "explain": "maybe"},
                                                                              "explain"),
    ({"q": "x", "category": 3}, "category"),
])
def test_bad_request_parameters_name_the_field(search_service, params, field):
    with pytest.raises(InputError) as caught:
        parse_search(params, search_service.config)
    assert caught.value.field == field


def test_deleted_unavailable_and_expired_records_are_never_returned(tmp_path, small_kb_file):
    rows = read_jsonl(small_kb_file)
    hidden = {r["kid"] for r in rows if r["knowledge"] == "杭州" and r["attribute"] in ("人口", "时区", "坐标")}
    changes = {"人口": {"del": 1}, "时区": {"available": 0}, "坐标": {"expires_at": "2020-01-01 00:00:00"},
               "英文名": {"expires_at": "2099-01-01 00:00:00"}}
    for row in rows:
        if row["knowledge"] == "杭州":
            row.update(changes.get(row["attribute"], {}))
    config = make_config(tmp_path / "data")
    load_files(Runtime(config), [str(write_jsonl(tmp_path / "kb.jsonl", rows))])
    hits = SearchService(Runtime(config)).search(SearchRequest(query="杭州的人口", size=50)).hits
    assert len(hidden) == 3 and not hidden & {h.record.kid for h in hits}
    assert hits[0].record.knowledge == "杭州"
    assert "geo:city:1808926:英文名" in {h.record.kid for h in hits}


def test_failed_load_leaves_the_served_version(tmp_path, small_kb_file):
    config = make_config(tmp_path / "data")
    first = load_files(Runtime(config), [str(small_kb_file)]).version
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kid": "x", "knowledge": "y"}\n', encoding="utf-8")
    with pytest.raises(KnowledgeFileError, match=r"bad\.jsonl:1: field 'attribute': missing"):
        load_files(Runtime(config), [str(small_kb_file), str(bad)])
    store = Runtime(config).engine
    assert store.current_name() == first
    assert [v.name for v in store.versions()] == [first]
    assert not list(store.versions_dir.glob(".building-*"))


def test_killed_load_leaves_the_served_version_and_the_next_load_succeeds(tmp_path, small_kb_file):
    """A real `kb load` subprocess killed with SIGKILL while it writes the new version: a real crash, no fake."""
    data_dir = tmp_path / "data"
    config = make_config(data_dir)
    first = load_files(Runtime(config), [str(small_kb_file)]).version
    rows = read_jsonl(small_kb_file)
    # Twenty copies under new kids: every text is already cached, so the child spends its time building.
    copies = write_jsonl(tmp_path / "copies.jsonl", [{**r, "kid": f"{r['kid']}#{n}"} for n in range(20) for r in rows])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"data_dir: {data_dir}\n", encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "kb_service.cli", "--config", str(config_file), "load",
                                str(copies)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Runtime(config).engine
    deadline = time.monotonic() + 120
    while not list(store.versions_dir.glob(".building-*/*")) and time.monotonic() < deadline:
        assert process.poll() is None, "the load ended before it could be killed"
        time.sleep(0.005)
    process.kill()
    process.wait()
    assert store.current_name() == first
    assert SearchService(Runtime(config)).search(SearchRequest(query="杭州的人口")).version == first
    second = load_files(Runtime(config), [str(copies)])
    assert store.current_name() == second.version != first
    assert second.records == 20 * len(rows) and second.encoded == 0


@pytest.mark.parametrize("partitions", ["0", "1024"])
def test_fast_mode_with_the_ann_codes_agrees_with_exact(tmp_path, small_kb_file, partitions):
    """Every code scanned, or the codes in inverted lists (one per 256 records at least) of which 2 are probed."""
    import faiss

    config = make_config(tmp_path, ANN_FOR_EVERY_SIZE, ("ann_partitions: 1024", f"ann_partitions: {partitions}"),
                         ("ann_probes: 256", "ann_probes: 2"))
    load_files(Runtime(config), [str(small_kb_file)])
    service = SearchService(Runtime(config))
    index = service.state.version.ann._index
    assert isinstance(index, faiss.IndexIVF) == (partitions != "0")
    assert not isinstance(index, faiss.IndexIVF) or (index.nlist > index.nprobe == 2)
    overlaps = []
    for query in ("东京的英文名", "巴黎在哪个时区", "人口最多的城市", "Mumbai", "上海"):
        exact = [h.record.kid for h in service.search(SearchRequest(query=query, size=10, mode="exact")).hits]
        fast = [h.record.kid for h in service.search(SearchRequest(query=query, size=10, mode="fast")).hits]
        overlaps.append(len(set(exact) & set(fast)) / 10)
    assert sum(overlaps) / len(overlaps) >= 0.9, overlaps


def test_fast_mode_finds_every_record_of_a_narrow_filter(tmp_path, small_kb_file):
    """The ANN scan is filtered afterwards; when too few neighbours pass, an exact scan must take over."""
    rows = read_jsonl(small_kb_file)
    narrow = {r["kid"] for r in rows[:3]}
    for row in rows[:3]:
        row["category"] = "测试"
    config = make_config(tmp_path, ANN_FOR_EVERY_SIZE)
    load_files(Runtime(config), [str(write_jsonl(tmp_path / "kb.jsonl", rows))])
    service = SearchService(Runtime(config))
    hits = service.search(SearchRequest(query="人口最多的城市", mode="fast", categories=("测试",))).hits
    assert {h.record.kid for h in hits} == narrow


def test_ann_sub_quantizers_divide_every_encoder_width():
    from kb_service.engines.embedded.vector_index import subquantizers_for

    assert subquantizers_for(512, 256) == 256
    assert subquantizers_for(384, 256) == 192
    assert subquantizers_for(300, 128) == 100
    assert subquantizers_for(7, 128) == 7


def test_not_ready_before_any_load(tmp_path):
    from kb_service.http.app import create_app

    config = make_config(tmp_path / "empty")
    client = create_app(Runtime(config), watch=False).test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "no index version" in ready.get_json()["error"]["message"]
    search = client.get("/search", query_string={"q": "杭州"})
    assert search.status_code == 503 and "kb load" in search.get_json()["error"]["message"]
