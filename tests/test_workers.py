"""`kb serve --workers 2`: real worker processes forked after the index is opened, answering on one port.

Every worker's requests land in one `/metrics` (Prometheus multi-process mode), the admin lockout and the
query log are shared, each worker follows a new version on its own, and a killed worker is replaced."""

from __future__ import annotations

import json
import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.conftest import config_text, loaded, read_jsonl, running_server, wait_for, write_jsonl

SEARCHES = 80


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (over every worker)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line[:line.rindex("}")]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _answering_pids(log_path) -> set[int]:
    pids = set()
    for line in log_path.read_text().splitlines():
        if "kb_service.access" in line and '"/search"' in line:
            pids.add(json.loads(line[line.index("{"):])["pid"])
    return pids


def test_workers_share_metrics_lockout_and_versions(tmp_path, capital_kb_file):
    data_dir = loaded(tmp_path / "data", capital_kb_file)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config_text(
        ("  admin_key_sha256: []", f"  admin_key_sha256: [{'ab' * 32}]"),
        ("  failures_allowed: 5 ", "  failures_allowed: 4 ")), encoding="utf-8")
    with running_server(tmp_path, data_dir, config_path, serve_args=("--workers", "2")) as base:
        log_path = tmp_path / "server.log"
        started = dict(wait_for(lambda: re.findall(r"worker (\d) started \(pid (\d+)\)", log_path.read_text())
                                 if log_path.read_text().count("started (pid") >= 2 else None))
        queries = [row["knowledge"] + "的" + row["attribute"] for row in read_jsonl(capital_kb_file)]

        def search(n: int) -> int:  # a new connection per request, as many clients would open
            return requests.get(f"{base}/search", params={"q": queries[n % len(queries)]}, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(search, range(SEARCHES)))
        assert statuses == [200] * SEARCHES
        assert _answering_pids(log_path) == {int(pid) for pid in started.values()}, "both workers answered"
        scraped = requests.get(f"{base}/metrics", timeout=10).text
        assert _metric(scraped, "kb_http_requests_total", endpoint="/search", status="200") == SEARCHES
        assert _metric(scraped, "kb_http_request_seconds_count", endpoint="/search") == SEARCHES

        # wrong keys counted across workers: the fourth locks the address out whichever worker it reaches
        refused = [requests.post(f"{base}/admin/reload", headers={"X-API-Key": "wrong"}, timeout=10).status_code
                   for _ in range(6)]
        assert refused[:4] == [401] * 4 and refused[4:] == [429, 429]

        # a new version: each worker switches to it on its own
        second = write_jsonl(tmp_path / "second.jsonl", [
            {**row, "value": row["value"] + " (2)"} for row in read_jsonl(capital_kb_file)])
        loaded(data_dir, second)
        current = (data_dir / "embedded" / "CURRENT").read_text().strip()

        def both_serve_it() -> bool:
            text = requests.get(f"{base}/metrics", timeout=10).text
            return len(re.findall(rf'kb_served_version{{[^}}]*index_version="{current}"[^}}]*}} 1\.0', text)) == 2

        wait_for(both_serve_it)
        # the parent holds no version between forks (the workers map theirs), so its heap does not grow with
        # the reloads and a pruned version's files are not held
        parent = int(Path(f"/proc/{started['1']}/stat").read_text().rsplit(")", 1)[1].split()[1])
        versions = str((data_dir / "embedded" / "versions").resolve())
        assert f"/{current}/vectors.npy" in Path(f"/proc/{started['1']}/maps").read_text()
        assert versions not in Path(f"/proc/{parent}/maps").read_text()

        # a worker killed with -9 is replaced, and the server keeps answering
        victim = int(started["2"])
        os.kill(victim, signal.SIGKILL)
        replacement = int(wait_for(lambda: re.findall(r"worker 2 started \(pid (\d+)\)", log_path.read_text())[1:])[0])
        assert replacement != victim
        wait_for(both_serve_it)  # the replacement started on the served version, opened for it by the parent
        assert versions not in Path(f"/proc/{parent}/maps").read_text()
        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(search, range(20))) == {200}
        scraped = requests.get(f"{base}/metrics", timeout=10).text
        assert _metric(scraped, "kb_http_requests_total", endpoint="/search", status="200") == SEARCHES + 20, \
            "the dead worker's counts stay in the totals"
