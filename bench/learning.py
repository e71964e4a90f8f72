"""Learning from use, simulated: synthetic users ask the test KBs' questions (tests/kb_shapes.py, wordings no
list holds) about half of the entities and click by a position-biased model (tests/click_simulation.py); the
proposals `kb suggest-understanding` mines from their clicks are all approved, the KB is reloaded, and MRR@10
is measured before and after on the same wordings about the other half of the entities (held out) and on the
half the sessions were about.

Usage: python bench/learning.py [--sessions 20] [KB …]   (KB: workshop, gadgets, poems, trails; default all)
       python bench/learning.py --idioms ../shared/data/idioms [--cache-from DATA_DIR]
The second form does the same on the idioms dev KB with wordings of its own (none in config.yaml's lists), and
then measures the dev queries before and after the learned reload with `kb eval`'s measures and p-values, so
what was learned is seen not to cost the dev tasks. `--cache-from` copies a data directory's embedding and
segmentation caches to save the encoding.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kb_service.config import load_config
from kb_service.evaluation import evaluate, format_table, read_qrels, read_queries
from kb_service.feedback.click_model import judgments_from_events
from kb_service.feedback.events import EventStore
from kb_service.feedback.learning import ProposalStore, mine
from kb_service.ingest.loading import load_files
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from kb_service.state import open_state
from scoring.planner import SearchRequest
from tests import kb_shapes
from tests.click_simulation import reciprocal_rank, sessions

# Wordings for the idioms KB's attributes, none holding a word of config.yaml's attribute lists.
IDIOM_WORDINGS = {"拼音": ("{}这几个字怎么念", "{}念什么"), "出处": ("{}典出何处", "{}最早见于哪里"),
                  "解释": ("{}讲的是啥", "{}比喻什么"), "例句": ("{}放进一句话里怎么说", "{}平时怎么说出口")}


def run(name: str, per_question: int) -> None:
    records, questions = getattr(kb_shapes, name)()
    with tempfile.TemporaryDirectory() as folder:
        kb = kb_shapes.write_jsonl(records, Path(folder) / "kb.jsonl")
        learn(name, kb, questions, Path(folder), per_question)


def learn(name: str, kb: Path, questions: list[tuple[str, str, str]], folder: Path, per_question: int,
          dev: tuple[Path, Path] | None = None) -> None:
    """Sessions about half the entities, mining, approval of every proposal, a reload; MRR@10 before and
    after on both halves, and with `dev` (queries, qrels) the dev queries' measures before and after."""
    entities = sorted({entity for _, _, entity in questions})
    used = set(random.Random(3).sample(entities, len(entities) // 2))
    seen = [q for q in questions if q[2] in used]
    held = [q for q in questions if q[2] not in used]
    config = dataclasses.replace(load_config(), data_dir=str(folder))
    load_files(Runtime(config), [str(kb)])
    service = SearchService(Runtime(config))
    before = reciprocal_rank(service, held), reciprocal_rank(service, seen)
    dev_before = _dev_run(service, dev, "before") if dev else None
    started = time.monotonic()
    events = sessions(service, seen, per_question)
    EventStore(open_state(config, "events"), config.feedback.max_events).add(events)
    judgments = judgments_from_events(EventStore(open_state(config, "events")).all())
    mined = mine(judgments, service.understand, service.get)
    store = ProposalStore(open_state(config, "proposals"))
    store.save(mined)
    store.decide([p.id for p in mined], "approved", "bench")
    print(f"{name}: {len(events):,} events from {len(seen) * per_question:,} sessions, {len(judgments)} "
          f"judgments, {len(mined)} proposals (mined in {time.monotonic() - started:.1f}s):")
    for p in mined:
        print(f"  {p.kind}: {p.text!r} → {p.target} ({p.queries} queries, {p.clicks} clicks, grade {p.grade})")
    load_files(Runtime(config), [str(kb)])  # the next reload builds the approved proposals in
    service = SearchService(Runtime(config))
    after = reciprocal_rank(service, held), reciprocal_rank(service, seen)
    print(f"| {name} | {len(held)} | {before[0]:.3f} | {after[0]:.3f} | {len(seen)} | {before[1]:.3f} | "
          f"{after[1]:.3f} |")
    if dev and dev_before:
        print(format_table([dev_before, _dev_run(service, dev, "after learning")]))


def _dev_run(service: SearchService, dev: tuple[Path, Path], label: str):
    queries, qrels = read_queries(dev[0]), read_qrels(dev[1])
    return evaluate(queries, qrels, lambda text: [
        h.record.kid for h in service.search(SearchRequest(query=text, size=100)).hits], label)


def idioms(folder: Path, per_question: int, cache_from: Path | None) -> None:
    with gzip.open(folder / "kb.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    kid_of = {(r["knowledge"], r["attribute"]): r["kid"] for r in rows}
    complete = sorted({name for name, _ in kid_of if all((name, a) in kid_of for a in IDIOM_WORDINGS)})
    chosen = random.Random(11).sample(complete, 80)
    questions = [(wording.format(name), kid_of[name, attribute], name) for name in chosen
                 for attribute, wordings in IDIOM_WORDINGS.items() for wording in wordings]
    with tempfile.TemporaryDirectory() as work:
        if cache_from:
            shutil.copytree(cache_from / "cache", Path(work) / "cache")
        learn("idioms", folder / "kb.jsonl.gz", questions, Path(work), per_question,
              (folder / "queries.dev.jsonl", folder / "qrels.dev.tsv"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="sessions per question")
    parser.add_argument("--idioms", type=Path, help="the idioms dev set's folder")
    parser.add_argument("--cache-from", type=Path, help="a data directory whose caches to copy")
    parser.add_argument("kbs", nargs="*", default=["workshop", "gadgets", "poems", "trails"])
    args = parser.parse_args()
    print("| KB | held-out questions | MRR@10 before | after | session questions | before | after |")
    print("|---|---|---|---|---|---|---|")
    if args.idioms:
        idioms(args.idioms, args.sessions, args.cache_from)
        return
    for name in args.kbs:
        run(name, args.sessions)


if __name__ == "__main__":
    main()
