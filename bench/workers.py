"""Throughput of `kb serve --workers N` under wrk, memory of the worker processes, and a reload under load.

Usage: python bench/workers.py --data-dir DIR --queries ../shared/data/geo/queries.dev.jsonl \
           [--workers 1,2] [--connections 1,8,32] [--seconds 10] [--mode exact] [--reload-kb FILE]

DIR must already serve a version (`KB_DATA_DIR=DIR kb load FILE`). For each worker count a real server
starts on the repository's config; wrk sends all the dev queries, shuffled, each wrk thread from its own
starting point (distinct queries, as users send them), at each connection count. Per row: requests/s, p50 and
p99 latency, failed requests (non-2xx and socket errors) and the query-vector cache hit ratio over the row
(from /metrics). Memory is the proportional set size (PSS, /proc/PID/smaps_rollup) of the server's
processes together after warm-up, so pages the workers share are counted once. Every row starts a fresh
server (an empty query-vector cache). With --reload-kb, a last row loads that file as a new version while
wrk runs at 8 connections, and checks that every worker switched to it and no request failed.

With --deploy, three rows more on a server with the last worker count and a copy of the config: steady wrk at
8 connections; the same while the server gets SIGHUP twice and then a config change that needs new workers
(`server.threads`) with a third SIGHUP, each waiting for the roll to replace every worker (failed requests
and p99 during the rolls); and SIGTERM after a few seconds of load, where every request the server accepted
must be answered (failed = all wrk errors except connections refused once the port is closed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import REPO, Server, wrk_run


def tree_pss_mib(pid: int) -> float:
    """PSS of a process and all its descendants, in MiB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
        for task in Path(f"/proc/{current}/task").iterdir():
            pending += [int(child) for child in (task / "children").read_text().split()]
    return total / 1024


def cache_counts(url: str) -> tuple[float, float]:
    text = requests.get(f"{url}/metrics", timeout=30).text
    counts = {"hit": 0.0, "miss": 0.0}
    for result, value in re.findall(r'kb_query_vector_cache\{[^}]*result="(\w+)"[^}]*\} (\S+)', text):
        counts[result] += float(value)
    return counts["hit"], counts["miss"]


def served_versions(url: str) -> list[str]:
    text = requests.get(f"{url}/metrics", timeout=30).text
    return re.findall(r'kb_served_version\{[^}]*index_version="([^"]+)"[^}]*\} 1\.0', text)


def load_run(url: str, queries: list[str], args, connections: int, seconds: int, work: Path) -> dict:
    hits, misses = cache_counts(url)
    figures = wrk_run(url, queries, args.mode, connections, seconds, work) or {}
    hits_after, misses_after = cache_counts(url)
    lookups = (hits_after - hits) + (misses_after - misses)
    figures["hit_ratio"] = (hits_after - hits) / lookups if lookups else 0.0
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--queries", required=True)
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}")
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--mode", default="exact", choices=["exact", "fast"])
    parser.add_argument("--reload-kb", help="a KB file to load as a new version while the last server is loaded")
    parser.add_argument("--deploy", action="store_true", help="rolling restarts and a SIGTERM under load")
    args = parser.parse_args()
    texts = [json.loads(line)["query"] for line in Path(args.queries).read_text(encoding="utf-8").splitlines()]
    random.Random(0).shuffle(texts)
    work = Path(tempfile.mkdtemp(prefix="kb-workers-"))
    config = REPO / "config.yaml"
    rows, memory = [], {}  # memory: PSS after warm-up, per worker count
    worker_counts = [int(n) for n in args.workers.split(",")]
    port = 8800
    for workers in worker_counts:
        for connections in (int(c) for c in args.connections.split(",")):
            port += 1  # a fresh server per row: every row starts with an empty query-vector cache
            server = Server(config, args.data_dir, port, workers=workers)
            try:
                for text in texts[-50:]:  # warm-up of every worker's code paths, on queries wrk sends last
                    requests.get(f"{server.url}/search", params={"q": text}, timeout=60)
                memory.setdefault(workers, tree_pss_mib(server.process.pid))
                figures = load_run(server.url, texts, args, connections, args.seconds, work)
                rows.append((workers, f"-c {connections}", figures))
                print(workers, connections, figures, flush=True)
            finally:
                server.close()
        if args.reload_kb and workers == worker_counts[-1]:
            port += 1
            server = Server(config, args.data_dir, port, workers=workers)
            try:
                rows.append((workers, "-c 8, new version loaded meanwhile",
                             reload_under_load(server, texts, args, work)))
                print(rows[-1], flush=True)
            finally:
                server.close()
        if args.deploy and workers == worker_counts[-1]:
            port += 1
            rows += deploy_under_load(config, port, workers, texts, args, work)
    print(f"\n{args.mode} mode, {len(texts):,} distinct dev queries (shuffled), {args.seconds} s per row, "
          f"{os.cpu_count()} CPU cores\n")
    print("| workers | wrk | req/s | p50 ms | p99 ms | failed | query-vector cache hits |")
    print("|---|---|---|---|---|---|---|")
    for workers, label, f in rows:
        failed = f"{f.get('errors', 0)}" + (f" (+{f['refused']} refused)" if f.get("refused") else "")
        print(f"| {workers} | {label} | {f.get('rps', 0):,.0f} | {f.get('50%', 0):.1f} | {f.get('99%', 0):.1f} | "
              f"{failed} | {f.get('hit_ratio', 0):.0%} |")
    print("\n| workers | PSS of all server processes, MiB | vs 1 worker |\n|---|---|---|")
    for workers, mib in memory.items():
        base = memory.get(1)
        print(f"| {workers} | {mib:,.0f} | {mib / base:.2f}× |" if base else f"| {workers} | {mib:,.0f} | |")


def reload_under_load(server: Server, texts: list[str], args, work: Path) -> dict:
    """wrk at 8 connections while `kb load` builds and switches to a new version; every worker must follow."""
    before = set(served_versions(server.url))
    seconds = max(args.seconds, 60)
    loader: dict = {}

    def load() -> None:
        time.sleep(3)
        environment = {**os.environ, "KB_DATA_DIR": str(args.data_dir)}
        started = time.monotonic()
        loader["status"] = subprocess.run([sys.executable, "-m", "kb_service.cli", "load", args.reload_kb],
                                          env=environment, cwd=REPO, capture_output=True).returncode
        loader["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=load)
    thread.start()
    figures = load_run(server.url, texts, args, 8, seconds, work)
    thread.join()
    time.sleep(2)
    after = served_versions(server.url)
    figures["switched"] = bool(after) and not (set(after) & before) and len(set(after)) == 1
    print(f"reload under load: kb load exited {loader.get('status')} after {loader.get('seconds', 0):.0f} s; "
          f"served before {sorted(before)}, after {after}", flush=True)
    return figures


def worker_pids(pid: int) -> set[int]:
    return {int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()}


def roll(server: Server, workers: int, timeout_s: float = 120) -> float:
    """SIGHUP, then wait until none of the workers that were serving is left and all `workers` run again;
    returns the seconds the roll took."""
    started = time.monotonic()
    before = worker_pids(server.process.pid)
    server.process.send_signal(signal.SIGHUP)
    while time.monotonic() - started < timeout_s:
        now = worker_pids(server.process.pid)
        if not (now & before) and len(now) == workers:
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError("a rolling restart did not replace every worker")


def deploy_under_load(config: Path, port: int, workers: int, texts: list[str], args, work: Path) -> list:
    """Steady load, rolling restarts under load (SIGHUP twice, then a config change needing new workers) and a
    SIGTERM under load, on one server started from a copy of `config`."""
    copy = work / "deploy-config.yaml"
    copy.write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
    server = Server(copy, args.data_dir, port, workers=workers)
    rows = []
    try:
        for text in texts[-50:]:
            requests.get(f"{server.url}/search", params={"q": text}, timeout=60)
        steady = load_run(server.url, texts, args, 8, max(args.seconds, 60), work)  # as long as the rolls row
        rows.append((workers, "-c 8, steady", steady))
        rolls: list[float] = []

        def deploys() -> None:
            time.sleep(3)
            rolls.append(roll(server, workers))
            rolls.append(roll(server, workers))
            text = copy.read_text(encoding="utf-8")
            changed = re.sub(r"(?m)^(  threads:) *\d+", r"\1 3", text)
            assert changed != text, "server.threads not found in the config"
            copy.write_text(changed, encoding="utf-8")
            rolls.append(roll(server, workers))

        thread = threading.Thread(target=deploys)
        thread.start()
        figures = load_run(server.url, texts, args, 8, max(args.seconds, 60), work)
        thread.join()
        print(f"rolls took {', '.join(f'{s:.1f}' for s in rolls)} s", flush=True)
        if len(rolls) < 3:
            raise RuntimeError("the rolling restarts did not finish")
        rows.append((workers, "-c 8, SIGHUP ×2 + config change (server.threads) + SIGHUP", figures))
        rows.append((workers, "8 keep-alive clients (Python), SIGTERM after 3 s",
                     sigterm_under_load(server, texts, args.mode)))
    finally:
        if server.process.poll() is None:
            server.close()
    for row in rows:
        print(row, flush=True)
    return rows


def sigterm_under_load(server: Server, texts: list[str], mode: str, clients: int = 8) -> dict:
    """Clients with keep-alive sessions search in a loop; after 3 s the server gets SIGTERM. wrk cannot tell a
    refused connection from a failed request, so each request is timed here: every one sent before the signal
    must be answered with 200; after it, connections are refused once the port is closed."""
    outcomes: list[tuple[float, str, float]] = []  # (sent at, outcome, ms)
    signalled: list[float] = []
    stop = time.monotonic() + 10

    def client(offset: int) -> None:
        session = requests.Session()
        for text in texts[offset::clients]:
            if time.monotonic() > stop:
                return
            sent = time.monotonic()
            try:
                status = session.get(f"{server.url}/search", params={"q": text, "mode": mode}, timeout=60)
                outcome = str(status.status_code)
            except requests.ConnectionError as err:
                outcome = "refused" if "refused" in str(err).lower() else "reset"
            outcomes.append((sent, outcome, (time.monotonic() - sent) * 1000))
            if outcome == "refused":
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    signalled.append(time.monotonic())
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join()
    server.process.wait(timeout=60)
    before = [(o, ms) for sent, o, ms in outcomes if sent < signalled[0]]
    after = [o for sent, o, _ in outcomes if sent >= signalled[0]]
    failed_before = sum(o != "200" for o, _ in before)
    latencies = sorted(ms for _, ms in before)
    print(f"SIGTERM: {len(before)} requests sent before it ({failed_before} failed); after it "
          f"{after.count('200')} answered, {after.count('refused')} refused, "
          f"{len(after) - after.count('200') - after.count('refused')} other", flush=True)
    return {"rps": len(before) / 3, "50%": latencies[len(latencies) // 2], "99%": latencies[int(len(latencies) * .99)],
            "errors": failed_before, "refused": after.count("refused")}


if __name__ == "__main__":
    main()
