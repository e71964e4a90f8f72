"""`POST /v1/records` on the real app, review database and engine: records posted over HTTP reach the review
database as `kb load` would validate them, bad ones reported by line while the others are kept, posting again
changes nothing, only ingest and admin keys may post, and the next reload publishes the approved ones."""

from __future__ import annotations

import json

import pytest

from kb_service.http.app import create_app
from kb_service.http.auth import new_key
from kb_service.reload.review import ReviewDatabase
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.planner import SearchRequest
from tests.conftest import make_config

ATTRIBUTES = ("型号", "产地", "重量", "颜色", "价格")


def products(count: int, start: int = 0) -> list[dict]:
    return [{"kid": f"product:{n}:{ATTRIBUTES[n % 5]}", "knowledge": f"产品{n // 5:04d}号",
             "attribute": ATTRIBUTES[n % 5], "value": f"规格{n}", "category": "产品", "confidence": 0.9}
            for n in range(start, start + count)]


@pytest.fixture()
def keyed(tmp_path):
    """An app over an empty data directory with an ingest, an admin and a search key; `status` is what
    ingested records are stored as."""
    keys = {role: new_key() for role in ("ingest", "admin", "search")}

    def make(status: str = "pending", limit: int = 10_000):
        config = make_config(tmp_path / "data", *((f"  {role}_key_sha256: []", f"  {role}_key_sha256: [{digest}]")
                                                  for role, (_, digest) in keys.items()),
                             ("  ingest_status: pending ", f"  ingest_status: {status} "),
                             ("  ingest_max_records: 10000 ", f"  ingest_max_records: {limit} "))
        service = SearchService(Runtime(config))
        client = create_app(Runtime(config), service=service, watch=False).test_client()
        return client, service, {role: {"X-API-Key": key} for role, (key, _) in keys.items()}, config

    return make


def _ndjson(rows: list[dict | str]) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n" for row in rows)


def test_ten_thousand_records_in_ten_requests_appear_after_one_reload(keyed):
    client, service, headers, _ = keyed("approved")
    for batch in range(10):
        response = client.post("/v1/records", json=products(1000, batch * 1000), headers=headers["ingest"])
        body = response.get_json()
        assert response.status_code == 200 and (body["accepted"], body["inserted"], body["status"]) == (
            1000, 1000, "approved"), body
    run = client.post("/v1/admin/reload", json={"wait": True}, headers=headers["admin"]).get_json()
    assert run["status"] == "succeeded", run
    service.refresh()
    assert service.state.version.size == 10_000
    top = service.search(SearchRequest(query="产品1234号的颜色", size=1)).hits[0].record
    assert (top.kid, top.value) == ("product:6173:颜色", "规格6173")


def test_a_bad_record_is_reported_by_its_line_and_the_others_are_kept(keyed):
    client, _, headers, config = keyed()
    rows = products(4)
    rows[1] = {**rows[1], "confidence": 1.7}
    lines = _ndjson([rows[0], rows[1], "{not json", rows[2], {"kid": "x"}, rows[3]])
    response = client.post("/v1/records", data=lines, content_type="application/x-ndjson", headers=headers["ingest"])
    body = response.get_json()
    assert response.status_code == 200 and (body["received"], body["accepted"], body["status"]) == (6, 3, "pending")
    assert [(r["line"], r["field"]) for r in body["rejected"]] == [(2, "confidence"), (3, "body"), (5, "knowledge")]
    assert body["rejected"][0]["message"].startswith("line 2: confidence: expected a number in [0, 1]")
    stored = ReviewDatabase(config.reload.database_url(config.paths))
    assert stored.counts().get("pending") == 3
    nothing = client.post("/v1/records", json=[{"kid": "y"}], headers=headers["ingest"])
    assert nothing.status_code == 400 and nothing.get_json()["error"]["code"] == "invalid_record"


def test_posting_the_same_batch_again_changes_nothing_and_an_edit_goes_back_to_review(keyed):
    client, _, headers, _ = keyed()
    rows = products(50)
    first = client.post("/v1/records", json=rows, headers=headers["ingest"]).get_json()
    again = client.post("/v1/records", json={"records": rows}, headers=headers["ingest"]).get_json()
    assert (first["inserted"], again["inserted"], again["changed"], again["unchanged"]) == (50, 0, 0, 50)
    rows[7]["value"] = "新规格"
    edited = client.post("/v1/records", json=rows, headers=headers["ingest"]).get_json()
    assert (edited["changed"], edited["unchanged"]) == (1, 49)


def test_only_ingest_and_admin_keys_post_and_an_ingest_key_opens_nothing_else(keyed):
    client, _, headers, _ = keyed()
    rows = products(2)
    assert client.post("/v1/records", json=rows).status_code == 401
    assert client.post("/v1/records", json=rows, headers=headers["search"]).status_code == 401
    assert client.post("/v1/records", json=rows, headers=headers["admin"]).status_code == 200
    assert client.get("/v1/admin/versions", headers=headers["ingest"]).status_code == 401
    assert client.get("/console", headers=headers["ingest"]).status_code == 401


def test_a_batch_over_the_limit_is_refused_before_anything_is_stored(keyed):
    client, _, headers, config = keyed(limit=100)
    too_many = products(101)
    response = client.post("/v1/records", data=_ndjson(too_many), content_type="application/x-ndjson",
                           headers=headers["ingest"])
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "too_many"
    assert ReviewDatabase(config.reload.database_url(config.paths)).counts().get("pending", 0) == 0
