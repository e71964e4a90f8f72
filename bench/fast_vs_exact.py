"""Agreement and speed of `fast` mode against `exact` on the served index version.

Usage: KB_DATA_DIR=… python bench/fast_vs_exact.py --queries ../shared/data/geo/queries.dev.jsonl [--limit 300]
Recall@10 is the share of exact's top 10 that fast also returns in its top 10. Large KBs hold records that
score exactly alike (same-named towns with the same country record), and which of a tie exact keeps is
arbitrary, so the tie-aware figure also counts a fast hit whose score equals exact's 10th. Latencies are
server-side (in-process; a warm-up pass caches the query vectors first, so both modes time the same work),
under the server's settings: one BLAS thread per search (`kb serve` sets it), each mode timed in its own pass
(interleaved, exact's full scans of the vectors pushed fast's data out of the CPU caches and doubled its p50).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from threadpoolctl import threadpool_limits

from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.planner import SearchRequest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", required=True)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--config")
    args = parser.parse_args()
    with open(args.queries, encoding="utf-8") as handle:
        texts = [json.loads(line)["query"] for line in handle][: args.limit]
    started = time.monotonic()
    service = SearchService(Runtime.start(args.config))
    print(f"opened {service.state.version.name} ({service.state.version.size:,} records, "
          f"ANN codes: {'yes' if service.state.version.ann else 'no'}) in {time.monotonic() - started:.1f}s")
    for text in texts:
        service.search(SearchRequest(query=text, size=10, mode="fast"))
    timings: dict[str, list[float]] = {"exact": [], "fast": []}
    results: dict[str, list] = {"exact": [], "fast": []}
    with threadpool_limits(1):
        service._encode_cached.cache_clear()  # once with each query's encoding, as a first request pays it
        encoded = []
        for text in texts:
            began = time.perf_counter()
            service.search(SearchRequest(query=text, size=10, mode="fast"))
            encoded.append((time.perf_counter() - began) * 1000)
        for mode in ("fast", "exact"):
            for text in texts:
                began = time.perf_counter()
                response = service.search(SearchRequest(query=text, size=10, mode=mode))
                timings[mode].append((time.perf_counter() - began) * 1000)
                results[mode].append(response.hits)
    recalls, tie_aware = [], []
    for exact_hits, fast_hits in zip(results["exact"], results["fast"], strict=True):
        exact = [hit.record.kid for hit in exact_hits]
        if exact:
            fast = {hit.record.kid: hit.score for hit in fast_hits}
            recalls.append(len(set(exact) & set(fast)) / len(exact))
            floor = exact_hits[-1].score - 1e-9
            tie_aware.append(min(1.0, sum(score >= floor for score in fast.values()) / len(exact)))
    for mode, values in timings.items():
        values.sort()
        print(f"{mode:5}: p50 {statistics.median(values):.1f} ms, p95 {values[int(0.95 * len(values))]:.1f} ms, "
              f"p99 {values[int(0.99 * len(values))]:.1f} ms over {len(values)} queries")
    print(f"fast, query encoding included: p50 {statistics.median(encoded):.1f} ms")
    ratio = statistics.median(timings["exact"]) / statistics.median(timings["fast"])
    print(f"recall@10 of exact's top 10 in fast's: {statistics.fmean(recalls):.3f} (min {min(recalls):.2f}), "
          f"tie-aware {statistics.fmean(tie_aware):.3f} (min {min(tie_aware):.2f}); fast is {ratio:.1f}x faster at p50")


if __name__ == "__main__":
    main()
