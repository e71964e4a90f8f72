"""The typed client against a real `kb serve` over HTTP: it agrees with the served OpenAPI document, reads
searches, suggestions and records into their models, ingests and reloads with the right keys, and reports
the server's error codes."""

from __future__ import annotations

import pytest

from kb_service.client import ApiError, KbClient
from kb_service.errors import InputError
from kb_service.http.auth import new_key
from tests.conftest import config_text, loaded, read_jsonl, running_server, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory, capital_kb_file):
    workdir = tmp_path_factory.mktemp("client")
    keys = {role: new_key() for role in ("ingest", "admin")}
    config_path = workdir / "config.yaml"
    config_path.write_text(config_text(*((f"  {role}_key_sha256: []", f"  {role}_key_sha256: [{digest}]")
                                         for role, (_, digest) in keys.items()),
                                       ("  ingest_status: pending ", "  ingest_status: approved ")), encoding="utf-8")
    with running_server(workdir, loaded(workdir / "data", capital_kb_file), config_path) as base:
        yield base, {role: key for role, (key, _) in keys.items()}


def test_the_client_and_the_served_document_agree(server):
    assert KbClient(server[0]).missing_operations() == []


def test_search_suggest_and_record_read_into_their_models(server):
    client = KbClient(server[0])
    answer = client.search("哥伦比亚", size=20, filters=[{"term": {"category": "国家"}}], facets=["attribute"],
                           highlight=True, fields=["kid", "knowledge", "category"])
    assert answer.total_relation == "eq" and answer.hits and {h.category for h in answer.hits} == {"国家"}
    assert answer.hits[0].highlight["knowledge"] == "<em>哥伦比亚</em>" and answer.hits[0].value is None
    assert sum(f.count for f in answer.facets["attribute"]) == answer.total
    assert client.suggest("bogot").suggestions[0].text == "波哥大"
    assert client.record(answer.hits[0].kid).knowledge == "哥伦比亚"
    assert client.record("no-such-kid") is None


def test_errors_carry_the_servers_code_and_bad_parameters_fail_before_sending(server):
    client = KbClient(server[0])
    with pytest.raises(ApiError) as refused:
        client.suggest("杭", size=99)
    assert (refused.value.status, refused.value.code, refused.value.field) == (400, "out_of_range", "size")
    with pytest.raises(InputError) as local:
        client.search("杭州", filters=[{"range": {"confidence": {"gte": "high"}}}])
    assert local.value.field == "filters[0].range.confidence.gte"
    with pytest.raises(ApiError) as unkeyed:
        client.ingest([{"kid": "k", "knowledge": "a", "attribute": "b", "value": "c", "category": "d"}])
    assert unkeyed.value.status == 401 and unkeyed.value.code == "unauthorized"


def test_ingested_records_are_served_after_a_reload(server, capital_kb_file):
    """The review database is the source of truth: the served KB is posted first, then a new record."""
    base, keys = server
    KbClient(base, keys["ingest"]).ingest(read_jsonl(capital_kb_file))
    report = KbClient(base, keys["ingest"]).ingest([
        {"kid": "geo:city:1796236:人口", "knowledge": "上海", "attribute": "人口", "value": "22315474",
         "category": "城市"},
        {"kid": "broken", "knowledge": "上海"}])
    assert (report.accepted, report.status, report.rejected[0].line) == (1, "approved", 2)
    run = KbClient(base, keys["admin"]).reload(wait=True)
    assert run["status"] == "succeeded", run
    client = KbClient(base)  # every worker follows the new version within a second
    answer = wait_for(lambda: (found := client.search("上海的人口", size=1)).index_version == run["version"] and found)
    assert (answer.hits[0].kid, answer.hits[0].value) == ("geo:city:1796236:人口", "22315474")
