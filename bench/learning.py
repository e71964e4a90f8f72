"""Learning from use, simulated: synthetic users ask the test KBs' questions (tests/kb_shapes.py, wordings no
list holds) about half of the entities and click by a position-biased model (tests/click_simulation.py); the
proposals `kb suggest-understanding` mines from their clicks are all approved, the KB is reloaded, and MRR@10
is measured before and after on the same wordings about the other half of the entities (held out) and on the
half the sessions were about.

Usage: python bench/learning.py [--sessions 20] [KB …]   (KB: workshop, gadgets, poems, trails; default all)
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kb_service.config import load_config
from kb_service.feedback.click_model import judgments_from_events
from kb_service.feedback.events import EventStore
from kb_service.feedback.learning import ProposalStore, mine
from kb_service.ingest.loading import load_files
from kb_service.serving.service import SearchService
from kb_service.state import open_state
from tests import kb_shapes
from tests.click_simulation import reciprocal_rank, sessions


def run(name: str, per_question: int) -> None:
    records, questions = getattr(kb_shapes, name)()
    entities = sorted({entity for _, _, entity in questions})
    used = set(random.Random(3).sample(entities, len(entities) // 2))
    seen = [q for q in questions if q[2] in used]
    held = [q for q in questions if q[2] not in used]
    with tempfile.TemporaryDirectory() as folder:
        config = dataclasses.replace(load_config(), data_dir=folder)
        kb = kb_shapes.write_jsonl(records, Path(folder) / "kb.jsonl")
        load_files(config, [str(kb)])
        service = SearchService(config)
        before = reciprocal_rank(service, held), reciprocal_rank(service, seen)
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
        load_files(config, [str(kb)])  # the next reload builds the approved proposals in
        service = SearchService(config)
        after = reciprocal_rank(service, held), reciprocal_rank(service, seen)
    print(f"| {name} | {len(held)} | {before[0]:.3f} | {after[0]:.3f} | {len(seen)} | {before[1]:.3f} | "
          f"{after[1]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="sessions per question")
    parser.add_argument("kbs", nargs="*", default=["workshop", "gadgets", "poems", "trails"])
    args = parser.parse_args()
    print("| KB | held-out questions | MRR@10 before | after | session questions | before | after |")
    print("|---|---|---|---|---|---|---|")
    for name in args.kbs:
        run(name, args.sessions)


if __name__ == "__main__":
    main()
