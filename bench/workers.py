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
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
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
    print(f"\n{args.mode} mode, {len(texts):,} distinct dev queries (shuffled), {args.seconds} s per row, "
          f"{os.cpu_count()} CPU cores\n")
    print("| workers | wrk | req/s | p50 ms | p99 ms | failed | query-vector cache hits |")
    print("|---|---|---|---|---|---|---|")
    for workers, label, f in rows:
        print(f"| {workers} | {label} | {f.get('rps', 0):,.0f} | {f.get('50%', 0):.1f} | {f.get('99%', 0):.1f} | "
              f"{f.get('errors', 0)} | {f.get('hit_ratio', 0):.0%} |")
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


if __name__ == "__main__":
    main()
