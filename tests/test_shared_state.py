"""Shared state on a real database: every store (events, judgments, the query log, reload history, the
lockout) works the same on SQLite and on PostgreSQL (scripts/pg-local), concurrent writers from two "hosts"
(two engines on one database) are serialised, the query log never makes a search wait, and two real
`kb serve` hosts on one PostgreSQL see each other's clicks, reloads and wrong keys."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, make_url, text

from kb_service import metrics
from kb_service.config import parse_config
from kb_service.feedback.events import Action, EventStore, SearchEvent
from kb_service.feedback.judgments import JudgmentStore, Rating
from kb_service.feedback.query_log import BATCH, QueryLog
from kb_service.http.auth import AccessStore, digest, new_key
from kb_service.reload.history import ReloadHistory, RunStatus
from kb_service.runtime import Runtime
from kb_service.state import StateDatabase, open_state, state_url
from scoring.planner import SearchRequest
from tests.conftest import REPO, config_text, loaded, running_server


def _state_config(tmp_path: Path, postgres, schema: str | None):
    """A config whose state lives in `schema` on the PostgreSQL node (password from its file), or in the
    data directory's SQLite files when `postgres` is None."""
    lines = [("data_dir: data", f"data_dir: {tmp_path / 'data'}")]
    if postgres is not None:
        lines += [("  database: null             # SQLAlchemy", f"  database: {postgres.schema_url(schema)}  #"),
                  ("  password_file: null        # the database", f"  password_file: {postgres.password_file}  #")]
    return config_text(*lines)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_config(request, tmp_path):
    """A parsed config on each backend; on PostgreSQL a schema of the test's own, dropped afterwards."""
    if request.param == "sqlite":
        yield parse_config(_state_config(tmp_path, None, None), "config.yaml")
        return
    postgres = request.getfixturevalue("postgres")
    schema = f"t{uuid.uuid4().hex[:12]}"
    config = parse_config(_state_config(tmp_path, postgres, schema), "config.yaml")
    admin = create_engine(state_url(config, "events"))
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    yield config
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def _second_host(config, store: str) -> StateDatabase:
    """Another engine on the same database: what a second host (or process) holds."""
    return StateDatabase(state_url(config, store))


def test_events_and_judgments_written_on_one_host_are_read_on_another(state_config):
    event = SearchEvent("q1", "杭州的人口", "geo:city:1808926:人口", 1, Action.CLICK, 1.7e9)
    assert EventStore(open_state(state_config, "events")).add([event, event]) == 2
    assert EventStore(_second_host(state_config, "events")).all() == [event, event]
    here, there = JudgmentStore(open_state(state_config, "judgments")), JudgmentStore(
        _second_host(state_config, "judgments"))
    here.rate(Rating("杭州的人口", "k1", 1, "ann", 1.0))
    there.rate(Rating("杭州的人口", "k1", 3, "bob", 2.0))
    there.rate(Rating("杭州的人口", "k2", 0, "bob", 2.0))
    assert [(r.kid, r.grade, r.rater) for r in here.judgments()] == [("k1", 3, "bob"), ("k2", 0, "bob")]


def test_stored_events_stay_within_their_byte_bound(state_config):
    store = EventStore(open_state(state_config, "events"), max_events=1_000_000, max_bytes=256 * 1024)
    event = SearchEvent("q" * 256, "查询" * 1000, "k" * 256, 1, Action.CLICK, 1.7e9)
    for _ in range(50):
        store.add([event] * 40)  # 2,000 events of ~4.5 KB: ~9 MB unbounded
    assert store.used_bytes() <= 256 * 1024 and 0 < store.count() < 2000


def test_the_history_shows_every_instance_and_each_cleans_up_only_its_own(state_config):
    a = ReloadHistory(open_state(state_config, "reloads"), "host-a")
    b = ReloadHistory(_second_host(state_config, "reloads"), "host-b")
    killed_a, running_b = a.start("schedule"), b.start("manual")
    done = a.start("api:ops")
    done.status, done.version = RunStatus.SUCCEEDED, "v000002"
    a.finish(done)
    assert a.mark_crashed() == 1  # host-a's own dead run; host-b's is still running, maybe right now
    runs = {run.id: run for run in b.runs()}
    assert runs[killed_a.id].status == "crashed" and runs[running_b.id].status == "running"
    assert (runs[done.id].instance, runs[done.id].version) == ("host-a", "v000002")
    a.replace_snapshot({"k1": "h1", "k2": "h2"})
    assert b.snapshot() == {"k1": "h1", "k2": "h2"}
    after = {"k2": "h2-edited", "k3": "h3", **{f"n{i}": "h" for i in range(1200)}}  # past one DELETE's chunk
    b.replace_snapshot(after, previous=b.snapshot())
    assert a.snapshot() == after
    a.replace_snapshot({"k3": "h3"}, previous=a.snapshot())
    assert b.snapshot() == {"k3": "h3"}


def test_a_burst_of_wrong_keys_across_two_hosts_gets_exactly_the_allowance(state_config):
    """20 concurrent wrong keys, half through each host's engine: the row lock (PostgreSQL) or the writer
    lock (SQLite) admits exactly `failures_allowed` of them."""
    policy = state_config.security
    hosts = [AccessStore(open_state(state_config, "access")), AccessStore(_second_host(state_config, "access"))]
    with ThreadPoolExecutor(max_workers=10) as pool:
        waits = list(pool.map(lambda i: hosts[i % 2].admit("203.0.113.9", None, policy), range(20)))
    assert waits.count(0) == policy.failures_allowed and all(w > 0 for w in waits if w)


def test_token_buckets_are_shared(state_config):
    hosts = [AccessStore(open_state(state_config, "access")), AccessStore(_second_host(state_config, "access"))]
    waits = [hosts[i % 2].take("events:203.0.113.9", per_minute=4) for i in range(6)]
    assert waits[:4] == [0, 0, 0, 0] and waits[4] > 0 and waits[5] > 0


def test_the_query_log_tallies_in_the_background(state_config, capital_service):
    log = QueryLog(open_state(state_config, "query_log"))
    for query in ("今天天气怎么样", "今天天气怎么样", "哥伦比亚的首都"):
        log.record(capital_service.search(SearchRequest(query=query, size=3)))
    log.flush()
    frequent = dict(QueryLog(_second_host(state_config, "query_log")).frequent("no entity"))
    assert frequent["今天天气怎么样"].searches == 2 and "哥伦比亚的首都" not in frequent


def test_a_stuck_database_drops_tallies_and_never_blocks_a_search(state_config, capital_service):
    """Another connection holds the table's lock (a real stall of the database, not a fake): the writer
    thread waits on it, the queue fills, and `record` keeps returning, dropping and counting."""
    state = open_state(state_config, "query_log")
    log = QueryLog(state, queue_size=5)
    response = capital_service.search(SearchRequest(query="杭州的人口", size=3))
    log.record(response)
    log.flush()
    blocker = _second_host(state_config, "query_log").engine.connect()
    blocker.begin()  # on SQLite, BEGIN IMMEDIATE: the database's one writer lock
    if not state.is_sqlite:
        blocker.exec_driver_sql("LOCK TABLE queries IN ACCESS EXCLUSIVE MODE")
    try:
        dropped_before = metrics.QUERY_LOG_DROPPED._value.get()
        finished = threading.Event()

        def many():
            for _ in range(200):
                log.record(response)
            finished.set()

        threading.Thread(target=many, daemon=True).start()
        assert finished.wait(5), "record() waited for the database"
        assert metrics.QUERY_LOG_DROPPED._value.get() - dropped_before >= 200 - 5 - BATCH
    finally:
        blocker.rollback()
        blocker.close()


# two real hosts on one PostgreSQL -------------------------------------------------------------------------

KEY = new_key()[0]


def _host_config(workdir: Path, postgres, schema: str, instance: str, kb_file: Path) -> Path:
    path = workdir / "config.yaml"
    path.write_text(config_text(
        ("  database: null             # SQLAlchemy", f"  database: {postgres.schema_url(schema)}  #"),
        ("  password_file: null        # the database", f"  password_file: {postgres.password_file}  #"),
        ("  instance: null             # this host", f"  instance: {instance}  #"),
        ("  search_key_sha256: []", f"  search_key_sha256: [{digest(KEY)}]"),
        ("  files: []  ", f"  files: [{kb_file}]  ")), encoding="utf-8")
    return path


def _kb(config_path: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "KB_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "kb_service.cli", "--config", str(config_path), *args],
                          env=environment, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_two_hosts_share_clicks_reload_history_and_the_lockout(tmp_path, postgres, capital_kb_file):
    schema = f"t{uuid.uuid4().hex[:12]}"
    with create_engine(make_url(postgres.schema_url(schema)).set(
            drivername="postgresql+psycopg", password=postgres.password_file.read_text().strip())).begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    hosts = []
    for name in ("host-a", "host-b"):
        workdir = tmp_path / name
        workdir.mkdir()
        hosts.append((workdir, loaded(workdir / "data", capital_kb_file),
                      _host_config(workdir, postgres, schema, name, capital_kb_file)))
    (a_dir, a_data, a_config), (b_dir, b_data, b_config) = hosts
    with running_server(a_dir, a_data, a_config) as a, running_server(b_dir, b_data, b_config) as b:
        kid = "geo:country:CO:首都"
        events = [{"query_id": f"q{i}", "query": "哥伦比亚的首都", "kid": kid, "position": 1, "action": action}
                  for i in range(3) for action in ("impression", "click")]
        posted = requests.post(f"{a}/events", json={"events": events}, headers={"X-API-Key": KEY}, timeout=30)
        assert posted.status_code == 202, posted.text
        qrels = tmp_path / "clicks.qrels"
        exported = _kb(b_config, b_data, "judgments", "from-events", "--qrels", str(qrels), "--min-impressions", "1")
        assert exported.returncode == 0, exported.stderr
        assert kid in qrels.read_text()  # clicked on host A, exported by host B

        statuses = [requests.get(f"{base}/search", params={"q": "杭州"}, headers={"X-API-Key": "wrong"},
                                 timeout=30).status_code for base in (a, a, a, b, b, b)]
        assert statuses == [401] * 5 + [429]  # five wrong keys in all, whichever host saw them

    for config_path, data_dir in ((a_config, a_data), (b_config, b_data)):
        reloaded = _kb(config_path, data_dir, "reload", "--force")
        assert reloaded.returncode == 0, reloaded.stderr
    listed = _kb(a_config, a_data, "reloads", "--json")
    assert {run["instance"] for run in json.loads(listed.stdout)} == {"host-a", "host-b"}


def test_a_state_database_that_is_down_costs_its_routes_never_search(tmp_path, capital_data_dir):
    """Nothing listens on the configured port (a real refused connection): the app still starts, search
    answers, events get a 503 with a code a client can branch on."""
    from kb_service.http.app import create_app
    from tests.conftest import make_config

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = make_config(capital_data_dir, ("  database: null             # SQLAlchemy",
                                            f"  database: postgresql://kb@127.0.0.1:{port}/kb  #"))
    client = create_app(Runtime(config), watch=False).test_client()
    assert client.get("/search", query_string={"q": "杭州"}).status_code == 200
    refused = client.post("/events", json={"query_id": "q", "kid": "k", "position": 1, "action": "click"})
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "state_unavailable"
