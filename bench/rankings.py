"""Writes the served version's rankings of judged queries as a TREC run, using only the service's public
API, so the same script run from an older checkout (`PYTHONPATH=OLD python bench/rankings.py …`) saves that
code's rankings for `kb eval --run`, which measures them beside today's with a p-value per difference.

Usage: KB_DATA_DIR=DATA python bench/rankings.py QUERIES.jsonl OUT.run [--config C.yaml] [--tag TAG]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from scoring.planner import SearchRequest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queries")
    parser.add_argument("out")
    parser.add_argument("--config")
    parser.add_argument("--tag", default="kb")
    args = parser.parse_args()
    service = SearchService(Runtime.start(args.config))
    with open(args.queries, encoding="utf-8") as handle:
        queries = [json.loads(line) for line in handle if line.strip()]
    started = time.monotonic()
    with open(args.out, "w", encoding="utf-8") as out:
        for done, query in enumerate(queries, start=1):
            hits = service.search(SearchRequest(query=query["query"], size=100)).hits
            for rank, hit in enumerate(hits, start=1):
                out.write(f"{query['qid']} Q0 {hit.record.kid} {rank} {len(hits) - rank + 1} {args.tag}\n")
            if done % 500 == 0 or done == len(queries):
                rate = done / (time.monotonic() - started)
                print(f"{done}/{len(queries)} queries, {rate:.0f}/s, ETA {(len(queries) - done) / rate:.0f}s",
                      file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
