"""The ANN codes' parameters against exact search on the served version's vectors: build time, size, recall.

Usage: KB_DATA_DIR=… python bench/ann_sweep.py --queries ../shared/data/geo/queries.dev.jsonl \
           [--subquantizers 64,128,256] [--k 200,600,1000] [--partitions 0,1024] [--probes 16,32] [--limit 300]
Recall@10 is the share of the exact cosine top 10 found in the scan's top `k` (what `fast` mode asks for:
candidates × overfetch), the number that bounds fast mode's agreement with exact when a record is found by
its vector alone. KBs repeat record texts (same-named towns), so some vectors are identical; the tie-aware
recall also counts a found record whose cosine equals exact's 10th.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from kb_service.config import load_config
from kb_service.engines.embedded.engine import EmbeddedEngine
from kb_service.engines.embedded.vector_index import FILE_NAME, VectorIndex
from kb_service.ingest.encoders import load_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", required=True)
    parser.add_argument("--config")
    parser.add_argument("--subquantizers", default="64,128,256")
    parser.add_argument("--k", default="200,600,1000")
    parser.add_argument("--partitions", default="0", help="inverted lists (0: scan every code)")
    parser.add_argument("--probes", default="32", help="lists scanned per search, for partitioned codes")
    parser.add_argument("--limit", type=int, default=300)
    args = parser.parse_args()
    config = load_config(args.config)
    store = EmbeddedEngine(config.paths.embedded, config.engine)
    directory = store.path_of(store.current_name())
    vectors = np.load(directory / "vectors.npy", mmap_mode="r")
    with open(args.queries, encoding="utf-8") as handle:
        texts = [json.loads(line)["query"] for line in handle][: args.limit]
    queries = load_encoder(config.encoder).encode(texts)
    started = time.perf_counter()
    exact, tenth = [], []
    for query in queries:
        cosines = vectors @ query
        exact.append(set(np.argpartition(-cosines, 9)[:10].tolist()))
        tenth.append(np.partition(-cosines, 9)[9] * -1)
    scan_ms = (time.perf_counter() - started) * 1000 / len(queries)
    print(f"{directory.name}: {len(vectors):,} vectors × {vectors.shape[1]}, exact scan {scan_ms:.0f} ms/query")
    for subquantizers in map(int, args.subquantizers.split(",")):
        for partitions in map(int, args.partitions.split(",")):
            _sweep(vectors, queries, exact, tenth, subquantizers, partitions, args)


def _sweep(vectors, queries, exact, tenth, subquantizers: int, partitions: int, args) -> None:
    everything = np.ones(len(vectors), dtype=bool)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.monotonic()
        VectorIndex.build(vectors, Path(scratch), subquantizers, partitions)
        build_s = time.monotonic() - started
        mib = (Path(scratch) / FILE_NAME).stat().st_size / 2**20
        indexes = {probes: VectorIndex.load(Path(scratch), probes) for probes in map(int, args.probes.split(","))}
    for (probes, index), k in itertools.product(indexes.items(), map(int, args.k.split(","))):
        recall, tie_aware, timings = [], [], []
        for query, truth, floor in zip(queries, exact, tenth, strict=True):
            began = time.perf_counter()
            keys = index.nearest(query, k, everything, 1)
            timings.append((time.perf_counter() - began) * 1000)
            recall.append(len(truth & set(keys.tolist())) / 10)
            tie_aware.append(min(10, int(np.sum(vectors[keys] @ query >= floor - 1e-6))) / 10)
        lists = f"{partitions} lists, {probes} probes" if partitions else "every code"
        print(f"sub-quantizers {subquantizers}, {lists}, k {k}: build {build_s:.0f} s, {mib:,.0f} MiB, "
              f"recall@10 {statistics.fmean(recall):.4f} (min {min(recall):.1f}), "
              f"tie-aware {statistics.fmean(tie_aware):.4f} (min {min(tie_aware):.1f}), "
              f"search p50 {statistics.median(timings):.2f} ms", flush=True)

if __name__ == "__main__":
    main()
