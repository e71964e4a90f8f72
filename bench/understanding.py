"""Entity- and attribute-linking accuracy and per-query latency of query understanding on the dev queries.

Usage: python bench/understanding.py ../shared/data/geo ../shared/data/idioms
For every *-attr and *-alias query, the grade-2 record names the expected entity and attribute; a link is
correct when the understander's top entity (and attribute) equal them. geo-alias queries name the city by an
alias that the KB no longer lists (the data set removed it), and only some of them ask a question.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from kb_service.config import load_config
from kb_service.evaluation import read_qrels, read_queries
from kb_service.ingest.loading import build_dictionary
from kb_service.ingest.readers import read_records
from query_understanding import QueryUnderstander
from query_understanding.segmenter import Segmenter


def main(folders: list[str]) -> None:
    config = load_config()
    for folder in map(Path, folders):
        records = read_records([folder / "kb.jsonl.gz"]).records
        by_kid = {r.kid: r for r in records}
        dictionary = build_dictionary(records, config.query_understanding.alias_attributes)
        started = time.perf_counter()
        understander = QueryUnderstander(config.query_understanding, dictionary, Segmenter(dictionary.user_words()))
        print(f"{folder.name}: {len(records)} records, understander built in {time.perf_counter() - started:.1f}s")
        qrels = read_qrels(folder / "qrels.dev.tsv")
        counts: Counter = Counter()
        timings = []
        misses = []
        for query in read_queries(folder / "queries.dev.jsonl"):
            started = time.perf_counter()
            parsed = understander.parse(query.text)
            timings.append((time.perf_counter() - started) * 1000)
            if not query.task.endswith(("-attr", "-alias")):
                continue
            target = by_kid[next(kid for kid, grade in qrels[query.qid].items() if grade == 2)]
            entity_ok = bool(parsed.entities) and parsed.entities[0].name == target.knowledge
            attribute_ok = bool(parsed.attributes) and parsed.attributes[0].name == target.attribute
            counts[query.task, "n"] += 1
            counts[query.task, "entity"] += entity_ok
            counts[query.task, "attribute"] += attribute_ok
            if not (entity_ok and attribute_ok) and len(misses) < 8:
                misses.append(f"    {query.text} -> {[e.name for e in parsed.entities]} "
                              f"{[a.name for a in parsed.attributes]} (want {target.knowledge}/{target.attribute})")
        for task in sorted({t for t, _ in counts}):
            n = counts[task, "n"]
            print(f"  {task}: entity accuracy {counts[task, 'entity'] / n:.3f}, "
                  f"attribute accuracy {counts[task, 'attribute'] / n:.3f} (n={n})")
        timings.sort()
        print(f"  understanding latency over {len(timings)} queries: p50 {statistics.median(timings):.2f} ms, "
              f"p99 {timings[int(0.99 * len(timings))]:.2f} ms")
        print("  sample misses:\n" + "\n".join(misses) if misses else "  no misses")


if __name__ == "__main__":
    main(sys.argv[1:])
