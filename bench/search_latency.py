"""Search latency through a running server: server-side `took_ms` and end-to-end HTTP time, p50/p95/p99.

Usage: python bench/search_latency.py --url http://127.0.0.1:8000 --queries ../shared/data/geo/queries.dev.jsonl
Each query is sent once, so every timing includes encoding the query (no query-vector cache hit).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import requests


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--queries", required=True)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--mode", choices=("exact", "fast"))
    args = parser.parse_args()
    with open(args.queries, encoding="utf-8") as handle:
        texts = [json.loads(line)["query"] for line in handle][: args.limit]
    session = requests.Session()
    server_ms, client_ms = [], []
    for text in texts:
        params = {"q": text, "size": 10, **({"mode": args.mode} if args.mode else {})}
        started = time.perf_counter()
        response = session.get(f"{args.url}/search", params=params, timeout=30)
        client_ms.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        server_ms.append(response.json()["took_ms"])
    for label, values in (("server-side", server_ms), ("end-to-end", client_ms)):
        print(f"{label:12} n={len(values)} mean={statistics.fmean(values):.1f} ms p50={percentile(values, .5):.1f} "
              f"p95={percentile(values, .95):.1f} p99={percentile(values, .99):.1f}")


if __name__ == "__main__":
    main()
