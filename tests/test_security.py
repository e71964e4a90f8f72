"""The security suite: each finding of an attacker's probe replayed against a real `kb serve` over real sockets
(docs/security.md is the threat model these tests hold the server to).

File reads and memory bombs through a pasted candidate config, trickling connections, an over-large declared
body, JSON that used to reach a 500, the lockout against an operator, key revocation by a config reload,
forged audit lines and missing headers."""

from __future__ import annotations

import logging
import re
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import make_url

from kb_service.feedback.events import Action, EventStore, SearchEvent
from kb_service.http.app import POLL_SECONDS, create_app
from kb_service.http.auth import client_address, digest, new_key
from kb_service.logs import OneLineFormatter
from kb_service.runtime import Runtime
from kb_service.state import StateDatabase
from tests.conftest import config_text, loaded, make_config, running_server, server_pid

ADMIN, SPARE, ANALYST, SEARCHER = (new_key()[0] for _ in range(4))  # SPARE: an admin key never used yet


def _rss_mb(pid: int) -> float:
    """The resident memory of a process and its workers together."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        line = next(x for x in Path(f"/proc/{current}/status").read_text().splitlines() if x.startswith("VmRSS:"))
        total += int(line.split()[1])
        for task in Path(f"/proc/{current}/task").iterdir():
            pending += [int(child) for child in (task / "children").read_text().split()]
    return total / 1024


def _write_config(path: Path, *replacements: tuple[str, str]) -> None:
    path.write_text(config_text(
        ("  admin_key_sha256: []", f"  admin_key_sha256: [{digest(ADMIN)}, {digest(SPARE)}]"),
        ("  analyst_key_sha256: []", f"  analyst_key_sha256: [{digest(ANALYST)}]"),
        ("  lockout_s: 60 ", "  lockout_s: 2 "),
        *replacements), encoding="utf-8")


@pytest.fixture(scope="module")
def secured(tmp_path_factory, capital_kb_file):
    """A real server with admin and analyst keys, a 2 s first lockout and a small connection limit; yields its
    base URL, its config file and its log."""
    workdir = tmp_path_factory.mktemp("security")
    config_path = workdir / "config.yaml"
    _write_config(config_path, ("  connection_limit: 200 ", "  connection_limit: 50 "),
                  ("  compares_per_minute: 20 ", "  compares_per_minute: 1000 "))
    data_dir = loaded(workdir / "data", capital_kb_file)
    with running_server(workdir, data_dir, config_path) as base:
        yield base, config_path, workdir / "server.log"


@pytest.fixture(scope="module")
def loaded_once(tmp_path_factory, capital_kb_file) -> Path:
    return loaded(tmp_path_factory.mktemp("security-data") / "data", capital_kb_file)


@pytest.fixture
def capital_data(loaded_once, tmp_path) -> Path:
    """A copy of a loaded data directory for a server of the test's own: lockouts, trusted keys and rate
    buckets live in the data directory, so no test inherits another's."""
    return Path(shutil.copytree(loaded_once, tmp_path / "data", symlinks=True))


def _analyst() -> dict:
    return {"X-API-Key": ANALYST}


# 1. no request names a server path --------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["/etc/passwd", "../../../../etc/passwd", "/dev/zero", "/proc/self/environ"])
def test_a_candidate_config_cannot_make_the_server_read_a_file(secured, target):
    base, _, _ = secured
    pid = server_pid(base)
    before = _rss_mb(pid)
    response = requests.post(f"{base}/console/compare", headers=_analyst(), timeout=10,
                             data={"q": "杭州", "config": f"extends: {target}\nscoring:\n  mode: exact\n"})
    assert response.status_code == 400
    assert "may only name config.yaml" in response.text
    assert "root:" not in response.text and "/bin/" not in response.text and "KB_DATA_DIR" not in response.text
    assert _rss_mb(pid) - before < 50


def test_the_live_config_may_still_be_extended(secured):
    base, _, _ = secured
    response = requests.post(f"{base}/console/compare", headers=_analyst(), timeout=30, data={
        "q": "哥伦比亚的首都", "config": "extends: config.yaml\nscoring:\n  boosts:\n    knowledge_term: 0\n"})
    assert response.status_code == 200 and 'id="candidate"' in response.text


def test_compare_and_the_console_need_the_analyst_key(secured):
    base, _, _ = secured
    for method, path in (("get", "/console"), ("get", "/console/insights"), ("post", "/console/compare")):
        refused = requests.request(method, f"{base}{path}", data={"q": "杭州", "config": "extends: /etc/passwd"},
                                   timeout=10)
        assert refused.status_code == 401, path
        assert refused.headers["WWW-Authenticate"].startswith("Basic"), "a browser is asked for the key"
        assert "root:" not in refused.text
    assert requests.get(f"{base}/console/insights", headers=_analyst(), timeout=10).status_code == 200
    assert requests.get(f"{base}/console", auth=("anyone", ANALYST), timeout=10).status_code == 200, "Basic works"


# 2. YAML bombs ----------------------------------------------------------------------------------------------

def _alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{n}: &a{n} [{','.join(f'*a{n - 1}' for _ in range(10))}]" for n in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text", [_alias_bomb(7), _alias_bomb(9), "scoring: " + "[" * 5000 + "]" * 5000,
                                  "x: " + "9" * 5000 + "\n", "scoring:\n  category_boost: .inf\n"])
def test_yaml_bombs_are_refused_at_once(secured, text):
    base, _, _ = secured
    pid = server_pid(base)
    before = _rss_mb(pid)
    started = time.perf_counter()
    response = requests.post(f"{base}/console/compare", headers=_analyst(), data={"q": "杭州", "config": text},
                             timeout=5)
    print(f"refused in {1000 * (time.perf_counter() - started):.0f} ms")
    assert response.status_code == 400
    assert re.search(r"aliases|nested deeper|not a usable|finite number|larger than", response.text)
    assert _rss_mb(pid) - before < 50


# 3. slow clients ----------------------------------------------------------------------------------------------

def test_trickling_connections_at_twice_the_limit_do_not_keep_a_client_out(secured):
    """100 connections (twice connection_limit) each send a header byte every half second, reconnecting when
    the server sheds them, while a normal client searches."""
    base, _, _ = secured
    host, port = base.removeprefix("http://").split(":")
    stop = threading.Event()
    shed = [0]

    def trickle():
        sockets: list[socket.socket] = []
        while not stop.is_set():
            while len(sockets) < 100:
                sockets.append(socket.create_connection((host, int(port)), timeout=5))
                sockets[-1].sendall(b"GET /search?q=%E6%9D%AD HTTP/1.1\r\nHost: x\r\n")
            for sock in list(sockets):
                try:
                    sock.sendall(b"X")
                except OSError:
                    sockets.remove(sock)
                    shed[0] += 1
            stop.wait(0.5)
        for sock in sockets:
            sock.close()

    attacker = threading.Thread(target=trickle, daemon=True)
    attacker.start()
    try:
        time.sleep(2)
        answers = [requests.get(f"{base}/search", params={"q": "杭州的人口"}, timeout=2) for _ in range(3)]
    finally:
        stop.set()
        attacker.join(timeout=10)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert shed[0] > 0, "the server shed some trickling connections"


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(secured):
    base, _, _ = secured
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 20000000\r\n\r\n" + b"{" * 1000)
        answer = b""
        while chunk := sock.recv(65536):  # the server answers and closes without waiting for the rest
            answer += chunk
        answer = answer.decode("utf-8", "replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert '"field": "body"' in answer and "application/json" in answer


# 8. input that reached a 500 --------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "field"), [
    (b'{"q": "x", "size": 1e999}', "size"), (b'{"q": "x", "size": Infinity}', "size"),
    (b'{"q": "x", "size": NaN}', "size"), (b'{"q": "x", "size": 2.9}', "size"),
    (b'{"q": "x", "mode": []}', "mode"), (b'{"q": "x", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}", "body"),
    (b"[" * 100_000 + b"]" * 100_000, "body"), (b'{"q": "\xff"}', "body")])
def test_hostile_json_is_a_400_naming_the_field(secured, body, field):
    base, _, _ = secured
    response = requests.post(f"{base}/search", data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"]["field"] == field and response.json()["error"]["code"]


def test_unicode_digits_are_not_a_size(secured):
    base, _, _ = secured
    response = requests.get(f"{base}/search", params={"q": "杭州", "size": "٣"}, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["field"] == "size"


@pytest.mark.parametrize(("path", "headers"), [("/events", {}), ("/admin/reload", {"X-API-Key": ADMIN}),
                                               ("/console/judgments", {"X-API-Key": ANALYST})])
def test_deep_json_and_nan_are_400s_on_every_route(secured, path, headers):
    base, _, _ = secured
    deep = b'{"events": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    nan = b'{"events": [{"query_id": "q", "kid": "k", "position": 1, "action": "click", "timestamp": NaN}]}'
    for body in (deep, nan):
        response = requests.post(f"{base}{path}", data=body, timeout=10,
                                 headers={"Content-Type": "application/json", **headers})
        assert response.status_code == 400, (path, response.text[:200])


# 6. the lockout ---------------------------------------------------------------------------------------------

def test_wrong_keys_cannot_lock_out_a_key_that_has_worked_from_there(tmp_path, capital_data):
    config_path = tmp_path / "config.yaml"
    _write_config(config_path)
    with running_server(tmp_path, capital_data, config_path) as base:
        _lockout_from_one_address(base)


def _lockout_from_one_address(base: str) -> None:
    operator = {"X-API-Key": ADMIN}
    for _ in range(3):  # requests without a key are not guesses: never counted
        assert requests.get(f"{base}/admin/config", timeout=10).status_code == 401
    assert requests.get(f"{base}/admin/config", headers=operator, timeout=10).status_code == 200
    with ThreadPoolExecutor(20) as pool:  # a concurrent burst gets no more guesses than a sequence
        burst = list(pool.map(lambda _: requests.get(f"{base}/admin/config", headers={"X-API-Key": "guess"},
                                                     timeout=10).status_code, range(20)))
    assert burst.count(401) == 5 and burst.count(429) == 15, burst
    assert requests.get(f"{base}/admin/config", headers=operator, timeout=10).status_code == 200
    # the spare key has never worked from this address: locked out like a guess, so it tells a guesser nothing
    locked = requests.get(f"{base}/admin/config", headers={"X-API-Key": SPARE}, timeout=10)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
    time.sleep(int(locked.headers["Retry-After"]) + 0.5)
    for _ in range(5):
        assert requests.get(f"{base}/admin/config", headers={"X-API-Key": "guess"}, timeout=10).status_code == 401
    second = requests.get(f"{base}/admin/config", headers={"X-API-Key": "guess"}, timeout=10)
    assert second.status_code == 429 and int(second.headers["Retry-After"]) > 2, "the second lockout is longer"
    assert requests.get(f"{base}/admin/config", headers=operator, timeout=10).status_code == 200
    time.sleep(int(second.headers["Retry-After"]) + 0.5)
    assert requests.get(f"{base}/admin/config", headers={"X-API-Key": SPARE}, timeout=10).status_code == 200


# 7. keys revoked by a config reload -------------------------------------------------------------------------

def test_a_config_reload_revokes_and_adds_keys_without_a_restart(tmp_path, capital_data):
    config_path = tmp_path / "config.yaml"
    _write_config(config_path)
    replacement = new_key()[0]
    with running_server(tmp_path, capital_data, config_path) as base:
        assert requests.get(f"{base}/admin/config", headers={"X-API-Key": ADMIN}, timeout=10).status_code == 200
        _write_config(config_path, (f"  admin_key_sha256: [{digest(ADMIN)}, {digest(SPARE)}]",
                                    f"  admin_key_sha256: [{digest(replacement)}]"))
        reloaded = requests.post(f"{base}/admin/config/reload", headers={"X-API-Key": ADMIN}, timeout=10)
        assert reloaded.status_code in (200, 401), reloaded.text  # the file watcher may have applied it first

        time.sleep(2 * POLL_SECONDS + 0.5)  # every worker re-reads a changed config file within a poll
        assert [requests.get(f"{base}/admin/config", headers={"X-API-Key": ADMIN}, timeout=10).status_code
                for _ in range(4)] == [401] * 4
        assert [requests.get(f"{base}/admin/config", headers={"X-API-Key": replacement}, timeout=10).status_code
                for _ in range(4)] == [200] * 4


def test_search_keys_close_the_search_routes_when_configured(tmp_path, capital_data):
    config_path = tmp_path / "config.yaml"
    _write_config(config_path, ("  search_key_sha256: []", f"  search_key_sha256: [{digest(SEARCHER)}]"))
    with running_server(tmp_path, capital_data, config_path) as base:
        assert requests.get(f"{base}/search", params={"q": "杭州"}, timeout=10).status_code == 401
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200, "probes stay open"
        for key in (SEARCHER, ANALYST, ADMIN):  # a key of a later role opens the search routes too
            assert requests.get(f"{base}/search", params={"q": "杭州"}, headers={"Authorization": f"Bearer {key}"},
                                timeout=10).status_code == 200
        event = {"query_id": "q1", "kid": "geo:city:1808926:人口", "position": 1, "action": "click"}
        assert requests.post(f"{base}/events", json=event, timeout=10).status_code == 401
        assert requests.post(f"{base}/events", json=event, headers={"X-API-Key": SEARCHER},
                             timeout=10).status_code == 202


# 5. events: rate-limited, bounded -----------------------------------------------------------------------------

def test_events_are_rate_limited_per_client(tmp_path, capital_data):
    config_path = tmp_path / "config.yaml"
    _write_config(config_path, ("  events_per_minute: 600 ", "  events_per_minute: 5 "))
    event = {"query_id": "q1", "kid": "geo:city:1808926:人口", "position": 1, "action": "click"}
    with running_server(tmp_path, capital_data, config_path) as base:
        statuses = [requests.post(f"{base}/events", json=event, timeout=10) for _ in range(7)]
    assert [s.status_code for s in statuses] == [202] * 5 + [429] * 2
    assert int(statuses[-1].headers["Retry-After"]) >= 1 and statuses[-1].json()["error"]["code"] == "rate_limited"


# 9. logs and headers --------------------------------------------------------------------------------------------

def test_a_newline_in_a_rollback_name_cannot_forge_an_audit_line(secured):
    base, _, log_path = secured
    forged = "v1\n2026-01-01 00:00:00,000 INFO kb_service.audit: admin action rollback by key deadbeef"
    response = requests.post(f"{base}/admin/rollback", json={"version": forged}, headers={"X-API-Key": ADMIN},
                             timeout=10)
    assert response.status_code == 400 and response.json()["error"]["field"] == "version"
    assert not any(line.startswith("2026-01-01") for line in log_path.read_text().splitlines())


def test_log_messages_are_one_line_whatever_they_carry():
    record = logging.LogRecord("kb_service.audit", logging.INFO, __file__, 1, "rollback to %s", ("a\nb\r\u2028c",),
                               None)
    line = OneLineFormatter("%(name)s: %(message)s").format(record)
    assert line == "kb_service.audit: rollback to a\\nb\\r\\u2028c"


def test_pages_cannot_be_framed_and_run_only_their_own_script(secured):
    base, _, _ = secured
    page = requests.get(f"{base}/console", params={"q": "杭州"}, headers=_analyst(), timeout=30)
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    policy = page.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert "frame-ancestors 'none'" in policy and f'<script nonce="{nonce}">' in page.text
    assert requests.get(f"{base}/healthz", timeout=10).headers["X-Frame-Options"] == "DENY"


# in process: what needs no server of its own --------------------------------------------------------------------

def _app(data_dir: Path, *replacements: tuple[str, str]):
    return create_app(Runtime(make_config(data_dir, ("  analyst_key_sha256: []",
                                                     f"  analyst_key_sha256: [{digest(ANALYST)}]"), *replacements)),
                      watch=False)


def test_x_forwarded_for_counts_only_behind_a_trusted_proxy(capital_data):
    app = _app(capital_data, ("  trusted_proxies: []", "  trusted_proxies: [10.9.0.0/16]"))
    cases = [("10.9.0.1", "203.0.113.7", "203.0.113.7"),  # from the proxy: the client it names
             ("10.9.0.1", "198.51.100.1, 203.0.113.7, 10.9.0.2", "203.0.113.7"),  # left of it: the client's word
             ("192.0.2.9", "203.0.113.7", "192.0.2.9"),  # not from a trusted proxy: the header is ignored
             ("10.9.0.1", "not-an-address", "10.9.0.1")]
    for peer, forwarded, expected in cases:
        with app.test_request_context(headers={"X-Forwarded-For": forwarded}, environ_base={"REMOTE_ADDR": peer}):
            assert client_address(app.extensions["kb_service"].config.security.trusted_proxies) == expected


def test_the_lockout_counts_each_forwarded_client_apart(capital_data):
    client = _app(capital_data, ("  trusted_proxies: []", "  trusted_proxies: [10.9.0.1]")).test_client()
    proxy = {"REMOTE_ADDR": "10.9.0.1"}
    for _ in range(5):
        assert client.get("/console/insights", headers={"X-API-Key": "guess", "X-Forwarded-For": "203.0.113.7"},
                          environ_base=proxy).status_code == 401
    assert client.get("/console/insights", headers={"X-API-Key": ANALYST, "X-Forwarded-For": "203.0.113.7"},
                      environ_base=proxy).status_code == 429
    assert client.get("/console/insights", headers={"X-API-Key": ANALYST, "X-Forwarded-For": "203.0.113.8"},
                      environ_base=proxy).status_code == 200


def test_a_batch_with_a_bad_event_is_refused_whole(capital_data):
    app = _app(capital_data)
    good = {"query_id": "q1", "kid": "geo:city:1808926:人口", "position": 1, "action": "click"}
    refused = app.test_client().post("/events", json={"events": [good, {**good, "position": 0}, good]})
    assert refused.status_code == 400 and refused.get_json()["error"]["field"] == "events[1].position"
    assert app.extensions["kb_events"].count() == 0


def test_stored_events_stay_within_their_byte_bound(tmp_path):
    store = EventStore(StateDatabase(make_url(f"sqlite:///{tmp_path / 'events.sqlite'}")), max_events=1_000_000,
                       max_bytes=256 * 1024)
    event = SearchEvent("q" * 256, "查询" * 1000, "k" * 256, 1, Action.CLICK, 1.7e9)
    for _ in range(50):
        store.add([event] * 40)  # 2,000 events of ~4.5 KB: ~9 MB unbounded
    assert store.used_bytes() <= 256 * 1024 and 0 < store.count() < 2000


def test_a_candidate_cannot_raise_the_search_limits(capital_data):
    client = _app(capital_data).test_client()
    response = client.post("/console/compare", headers={"X-API-Key": ANALYST},
                           data={"q": "杭州", "config": "search:\n  deadline_ms: 600000\n"})
    assert response.status_code == 400 and "search cannot differ" in response.get_data(as_text=True)
