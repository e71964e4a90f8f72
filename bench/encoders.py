"""Query encoding latency on one core and bulk encoding rate, per sentence-transformers model and runtime.

Usage: python bench/encoders.py [--queries ../shared/data/wordnet/queries.dev.jsonl]
                                [--kb ../shared/data/wordnet/kb.jsonl.gz] [--records 2000]
Each query is encoded alone with one compute thread (as a server thread encodes it), rounds alternating
between the runtimes so a busy machine slows both alike; bulk encoding reads the KB's first records'
embedding texts with every core. The export's agreement with torch is printed as the worst cosine over the
queries and records encoded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.search_latency import percentile
from kb_service.config import EncoderConfig, EncoderRuntime, PackagedModel
from kb_service.ingest.encoders import Encoder, load_encoder
from kb_service.ingest.readers import read_records

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wordnet"


def query_ms(encoder: Encoder, texts: list[str]) -> list[float]:
    timings = []
    for text in texts:
        started = time.perf_counter()
        encoder.encode([text])
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", default=str(SHARED / "queries.dev.jsonl"))
    parser.add_argument("--kb", default=str(SHARED / "kb.jsonl.gz"))
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with open(args.queries, encoding="utf-8") as handle:
        queries = [json.loads(line)["query"] for line in handle][: args.limit]
    texts = [r.embedding_text() for r in read_records([args.kb]).records[: args.records]]
    cores = os.cpu_count() or 1
    print(f"{len(queries)} queries one at a time on 1 thread ({args.rounds} alternating rounds); "
          f"{len(texts)} records in bulk on {cores} threads")
    for model in PackagedModel:
        runtimes = {r: load_encoder(EncoderConfig(provider="sentence-transformers", model=model, runtime=r,
                                                  threads=1)) for r in (EncoderRuntime.TORCH, EncoderRuntime.ONNX)}
        timings: dict[EncoderRuntime, list[float]] = {r: [] for r in runtimes}
        for encoder in runtimes.values():
            query_ms(encoder, queries[:20])  # warm-up
        for _ in range(args.rounds):
            for runtime, encoder in runtimes.items():
                timings[runtime] += query_ms(encoder, queries)
        worst = float((runtimes[EncoderRuntime.TORCH].encode(queries + texts[:500])
                       * runtimes[EncoderRuntime.ONNX].encode(queries + texts[:500])).sum(axis=1).min())
        for runtime, encoder in runtimes.items():
            encoder.use_threads(cores)
            started = time.perf_counter()
            vectors = encoder.encode(texts)
            rate = len(texts) / (time.perf_counter() - started)
            encoder.use_threads(1)
            assert np.isfinite(vectors).all()
            print(f"{model} {runtime:5}: query p50 {statistics.median(timings[runtime]):6.1f} ms, "
                  f"p95 {percentile(timings[runtime], 0.95):6.1f} ms; bulk {rate:7.1f} records/s")
        print(f"{model}: worst cosine onnx vs torch over {len(queries) + 500} texts {worst:.7f}")


if __name__ == "__main__":
    main()
