"""Search latency through a running server: server-side `took_ms` and end-to-end HTTP time, p50/p95/p99.

Usage: python bench/search_latency.py --url http://127.0.0.1:8000 --queries ../shared/data/geo/queries.dev.jsonl
                                     [--mode exact|fast] [--facets category,attribute]
Each query is sent once, so every timing includes encoding the query (no query-vector cache hit). Searches go
through the typed client (`kb_service.client`), as a Python caller would send them; end-to-end time includes
its reading of the answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from kb_service.client import KbClient


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--queries", required=True)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--mode", choices=("exact", "fast"))
    parser.add_argument("--facets", default="", help="comma-separated facet fields to count on every search")
    args = parser.parse_args()
    with open(args.queries, encoding="utf-8") as handle:
        texts = [json.loads(line)["query"] for line in handle][: args.limit]
    client = KbClient(args.url, timeout_s=30)
    facets = [f for f in args.facets.split(",") if f] or None
    server_ms, client_ms = [], []
    for text in texts:
        started = time.perf_counter()
        answer = client.search(text, size=10, mode=args.mode, facets=facets)
        client_ms.append((time.perf_counter() - started) * 1000)
        server_ms.append(answer.took_ms)
    for label, values in (("server-side", server_ms), ("end-to-end", client_ms)):
        print(f"{label:12} n={len(values)} mean={statistics.fmean(values):.1f} ms p50={percentile(values, .5):.1f} "
              f"p95={percentile(values, .95):.1f} p99={percentile(values, .99):.1f}")


if __name__ == "__main__":
    main()
