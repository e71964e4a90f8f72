"""Deploys and process faults against a real `kb serve --workers 2`: SIGTERM drains what is in flight, SIGHUP
replaces the workers under load without a failed request, a killed parent takes its workers with it, and a
worker that stops working (SIGSTOP: a real freeze, no test hook in the product) is replaced."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from kb_service.http.auth import digest, new_key
from kb_service.process import fresh_metrics_dir
from tests.conftest import config_text, loaded, read_jsonl, running_server, server_pid, wait_for, write_jsonl

KEY = new_key()[0]


@pytest.fixture
def deploy_dir(tmp_path, capital_kb_file) -> tuple[Path, Path, Path]:
    """A data directory serving the capital KB, and a config with an admin key, a short worker timeout and
    reloads from the capital KB plus 200 records no cache has seen, so a `wait: true` reload is a request
    that takes seconds: it encodes them, segments them and refits the link model."""
    unseen = uuid.uuid4().hex
    reloaded = write_jsonl(tmp_path / "reload.jsonl", [*read_jsonl(capital_kb_file), *(
        {"kid": f"deploy:{i}", "knowledge": f"部署测试地{i}", "attribute": "说明", "value": f"{unseen} 第{i}条说明",
         "category": "城市"} for i in range(200))])
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config_text(
        ("  admin_key_sha256: []", f"  admin_key_sha256: [{digest(KEY)}]"),
        ("  files: []  ", f"  files: [{reloaded}]  "),
        ("  worker_timeout_s: 30 ", "  worker_timeout_s: 3 ")), encoding="utf-8")
    return tmp_path, loaded(tmp_path / "data", capital_kb_file), config_path


def _workers(log_path: Path) -> dict[int, int]:
    """Worker number → pid of the workers the log says were started last."""
    return {int(n): int(pid) for n, pid in re.findall(r"worker (\d) started \(pid (\d+)\)", log_path.read_text())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited


def test_sigterm_lets_a_slow_request_finish(deploy_dir):
    workdir, data_dir, config_path = deploy_dir
    with running_server(workdir, data_dir, config_path, serve_args=("--workers", "2")) as base:
        parent = server_pid(base)
        answer: list[requests.Response] = []
        slow = threading.Thread(target=lambda: answer.append(requests.post(
            f"{base}/admin/reload", json={"wait": True, "force": True}, headers={"X-API-Key": KEY}, timeout=60)))
        slow.start()
        log_path = workdir / "server.log"
        wait_for(lambda: "reload (admin) by key" in log_path.read_text())  # under way in a worker
        os.kill(parent, signal.SIGTERM)
        slow.join(timeout=60)
        assert answer and answer[0].status_code == 200, answer and answer[0].text
        assert answer[0].json()["status"] == "succeeded"
        wait_for(lambda: not _alive(parent), 20)
        log = log_path.read_text()
        assert log.index("draining (signal 15)") < log.index("reload 1 succeeded"), "the signal came mid-request"
        assert log.rstrip().endswith("stopped")


def test_sighup_replaces_every_worker_under_load_without_a_failed_request(deploy_dir):
    workdir, data_dir, config_path = deploy_dir
    log_path = workdir / "server.log"
    with running_server(workdir, data_dir, config_path, serve_args=("--workers", "2")) as base:
        parent = server_pid(base)
        first = wait_for(lambda: _workers(log_path) if len(_workers(log_path)) == 2 else None)
        stop, statuses, errors, closing = threading.Event(), [], [], []

        def load(client) -> None:  # a new connection per request (`requests`), or one kept alive (a Session)
            while not stop.is_set():
                try:
                    answer = client.get(f"{base}/search", params={"q": "哥伦比亚的首都"}, timeout=30)
                    statuses.append(answer.status_code)
                    if answer.headers.get("Connection") == "close":  # from a draining worker
                        closing.append(client)
                except requests.RequestException as err:
                    errors.append(repr(err))

        clients = [requests, requests, requests.Session(), requests.Session()]
        threads = [threading.Thread(target=load, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        try:
            for roll in (1, 2):
                os.kill(parent, signal.SIGHUP)
                wait_for(lambda roll=roll: log_path.read_text().count("every worker replaced") >= roll, 60)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert errors == [] and set(statuses) == {200} and len(statuses) > 50, (errors[:3], len(statuses))
        assert any(isinstance(client, requests.Session) for client in closing), "keep-alive clients were moved"
        last = _workers(log_path)
        assert not set(last.values()) & set(first.values()), "every worker was replaced"
        assert all(not _alive(pid) for pid in first.values())


def test_a_killed_parent_takes_its_workers_and_the_port_is_free_at_once(deploy_dir):
    workdir, data_dir, config_path = deploy_dir
    log_path = workdir / "server.log"
    with running_server(workdir, data_dir, config_path, serve_args=("--workers", "2")) as base:
        workers = wait_for(lambda: _workers(log_path) if len(_workers(log_path)) == 2 else None)
        parent = server_pid(base)
        os.kill(parent, signal.SIGKILL)
        time.sleep(2)
        assert [pid for pid in workers.values() if _alive(pid)] == []
        port = int(base.rsplit(":", 1)[1])
        with socket.create_server(("127.0.0.1", port)):  # what a restarted `kb serve` does first
            pass
    left = list(Path(tempfile.gettempdir()).glob(f"kb-metrics-{parent}-*"))
    assert left, "the killed server could not remove its metrics directory"
    shutil.rmtree(fresh_metrics_dir())  # what the next `kb serve` on this host does: the dead one's goes
    assert not any(path.exists() for path in left)


def test_a_frozen_worker_is_replaced(deploy_dir):
    workdir, data_dir, config_path = deploy_dir
    log_path = workdir / "server.log"
    with running_server(workdir, data_dir, config_path, serve_args=("--workers", "2")) as base:
        workers = wait_for(lambda: _workers(log_path) if len(_workers(log_path)) == 2 else None)
        frozen = workers[2]
        os.kill(frozen, signal.SIGSTOP)  # stops answering anything, as a hung process does
        replaced = wait_for(lambda: _workers(log_path)[2] != frozen, 20)
        assert replaced and "has not answered" in log_path.read_text()
        wait_for(lambda: not _alive(frozen), 10)
        answers = {requests.get(f"{base}/search", params={"q": "伦敦"}, timeout=10).status_code for _ in range(10)}
        assert answers == {200}


def test_json_logs_put_every_line_in_one_object_with_request_and_versions(deploy_dir):
    workdir, data_dir, config_path = deploy_dir
    config_path.write_text(config_path.read_text().replace("  log_format: text ", "  log_format: json "))
    log_path = workdir / "server.log"
    with running_server(workdir, data_dir, config_path, serve_args=("--workers", "2")) as base:
        found = requests.get(f"{base}/search", params={"q": "哥伦比亚的首都"}, headers={"X-Request-Id": "req-1"},
                             timeout=30)
        assert found.status_code == 200
        assert requests.post(f"{base}/admin/reload", headers={"X-API-Key": "wrong"}, timeout=30).status_code == 401
        reloaded = requests.post(f"{base}/admin/reload", json={"wait": True, "force": True},
                                 headers={"X-API-Key": KEY}, timeout=60)
        assert reloaded.status_code == 200
        wait_for(lambda: '"req-1"' in log_path.read_text())
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]  # each one JSON
    access = next(line for line in lines if line.get("request_id") == "req-1" and line["logger"] == "kb_service.access")
    assert access["status"] == 200 and access["path"] == "/search" and access["pid"] != server_pid_of(lines)
    assert access["index_version"] == found.json()["index_version"]
    assert access["config_version"] == found.json()["config_version"]
    assert any(line["logger"] == "kb_service.audit" and line["level"] == "WARNING" and "request_id" in line
               for line in lines)
    assert any("reload 1 succeeded" in line.get("message", "") for line in lines)


def server_pid_of(lines: list[dict]) -> int:
    """The parent's pid: the process that logged that it is listening."""
    return next(line["pid"] for line in lines if "listening on" in line.get("message", ""))
