"""Entity- and attribute-linking accuracy and per-query latency of query understanding on the dev queries.

Usage: python bench/understanding.py ../shared/data/geo ../shared/data/idioms
       python bench/understanding.py --leave-phrasing-out ../shared/data/geo=DATA_DIR …
       python bench/understanding.py --shapes [--config C.yaml]
The third form loads the test KBs of tests/kb_shapes.py (made here, questions in words no list holds) and
prints, per KB and attribute, how often the asked attribute is linked first and the asked record's MRR@10.
The second form needs each KB loaded in DATA_DIR (`KB_DATA_DIR=DATA_DIR kb load …/kb.jsonl.gz`): it groups the
attribute questions by their question part (the query without the entity's name), holds out each group in
turn with every list entry that occurs in its question part removed (attribute synonyms, question words,
attribute examples), and reports attribute-linking accuracy and the exact record's MRR@10 per signal.
For every *-attr and *-alias query, the grade-2 record names the expected entity and attribute; a link is
correct when the understander's top entity (and attribute) equal them. geo-alias queries name the city by an
alias that the KB no longer lists (the data set removed it), and only some of them ask a question.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from kb_service.config import load_config
from kb_service.evaluation import read_qrels, read_queries
from kb_service.ingest.loading import build_dictionary
from kb_service.ingest.readers import read_records
from kb_service.runtime import Runtime
from kb_service.serving.service import SearchService
from query_understanding import QueryUnderstander
from query_understanding.normalise import normalise_text
from query_understanding.segmenter import Segmenter
from scoring.planner import SearchRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.kb_shapes import OVERVIEW_WORDINGS, gadgets, poems, trails, workshop, write_jsonl

PARAPHRASES = Path(__file__).resolve().parent.parent / "tests" / "data" / "paraphrases.jsonl"
SIGNALS = {"lexicon only": (), "+ overlap": ("overlap",), "+ embeddings": ("overlap", "embedding")}


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


def leave_phrasing_out(folder: Path, data_dir: Path) -> None:
    base = dataclasses.replace(load_config(), data_dir=str(data_dir))
    service = SearchService(Runtime(base))
    qrels = read_qrels(folder / "qrels.dev.tsv")
    groups: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for query in read_queries(folder / "queries.dev.jsonl"):
        if query.task.endswith("-attr"):
            target = service.get(next(kid for kid, grade in qrels[query.qid].items() if grade == 2))
            groups[query.text.replace(target.knowledge, "{e}")].append((query.text, target))
    print(f"{folder.name}: {sum(map(len, groups.values()))} attribute questions in {len(groups)} phrasings")
    totals: Counter = Counter()
    for number, (phrasing, members) in enumerate(sorted(groups.items())):
        question = normalise_text(phrasing.replace("{e}", " "))
        understanding = _without_words_in(base.query_understanding, question)
        row = []
        for signal, signals in SIGNALS.items():
            config = dataclasses.replace(base, version=f"lpo-{number}-{signal}",
                                         query_understanding=dataclasses.replace(understanding,
                                                                                 attribute_signals=signals))
            service.reload_config(config)
            linked = ranked = 0.0
            for text, target in members:
                parsed = service.understand(text)
                linked += bool(parsed.attributes) and parsed.attributes[0].name == target.attribute
                hits = service.search(SearchRequest(query=text, size=10)).hits
                ranked += next((1 / rank for rank, hit in enumerate(hits, 1) if hit.record.kid == target.kid), 0.0)
            totals[signal, "linked"] += linked
            totals[signal, "rr"] += ranked
            row.append(f"{linked / len(members):.2f}/{ranked / len(members):.2f}")
        print(f"  {phrasing:<22} n={len(members):<3} " + "  ".join(row))
    n = sum(map(len, groups.values()))
    print(f"  | {folder.name} held-out phrasings (n={n}) | attribute accuracy | exact record MRR@10 |")
    print("  |---|---|---|")
    for signal in SIGNALS:
        print(f"  | {signal} | {totals[signal, 'linked'] / n:.3f} | {totals[signal, 'rr'] / n:.3f} |")
    service.reload_config(dataclasses.replace(base, version="overview"))
    overview_ranks(service, base, folder)
    service.reload_config(dataclasses.replace(base, version="paraphrases"))
    ranks = paraphrase_ranks(service, folder.name)
    first = sum(rank == 1 for _, rank in ranks)
    print(f"  tests/data/paraphrases.jsonl ({folder.name}, n={len(ranks)}): exact record first "
          f"{first / len(ranks):.3f}, MRR@10 {sum(1 / r for _, r in ranks if r) / len(ranks):.3f}; not first: "
          + ", ".join(f"{q} ({r})" for q, r in ranks if r != 1))


def overview_ranks(service: SearchService, config, folder: Path, entities: int = 40) -> None:
    """The overview class: for `entities` sampled entities of each category with an overview attribute,
    every held-out overview wording; the overview record of the named entity (namesakes alike) must rank
    first. Prints the share first and MRR@10."""
    import random

    overview = next((s.overview_attributes for s in config.scoring.rescoring if hasattr(s, "overview_attributes")),
                    {})
    records = [r for r in read_records([folder / "kb.jsonl.gz"]).records if overview.get(r.category) == r.attribute]
    names = sorted({r.knowledge for r in records})
    sample = random.Random(5).sample(names, min(entities, len(names)))
    first = reciprocal = 0.0
    misses = []
    for wording in OVERVIEW_WORDINGS:
        for name in sample:
            text = wording.format(name)
            hits = service.search(SearchRequest(query=text, size=10)).hits
            rank = next((rank for rank, hit in enumerate(hits, 1) if hit.record.knowledge == name
                         and overview.get(hit.record.category) == hit.record.attribute), None)
            first += rank == 1
            reciprocal += 1 / rank if rank else 0.0
            if rank != 1 and len(misses) < 6:
                misses.append(f"{text} ({rank}: {hits[0].record.attribute if hits else '-'} first)")
    n = len(OVERVIEW_WORDINGS) * len(sample)
    print(f"  overview questions in held-out wordings ({folder.name}, n={n}): overview record first "
          f"{first / n:.3f}, MRR@10 {reciprocal / n:.3f}; e.g. not first: {'; '.join(misses) or '-'}")


def paraphrase_ranks(service: SearchService, kb: str) -> list[tuple[str, int | None]]:
    """Each paraphrase of tests/data/paraphrases.jsonl for `kb` with the rank (top 10) of a record of the
    named entity and attribute (namesakes count alike)."""
    rows = [json.loads(line) for line in PARAPHRASES.read_text(encoding="utf-8").splitlines() if line.strip()]
    ranks = []
    for row in (r for r in rows if r["kb"] == kb):
        hits = service.search(SearchRequest(query=row["query"], size=10)).hits
        ranks.append((row["query"], next((rank for rank, hit in enumerate(hits, 1) if (
            hit.record.knowledge, hit.record.attribute) == (row["entity"], row["attribute"])), None)))
    return ranks


def _without_words_in(understanding, question: str):
    """The understanding config with every list entry and value-shape form that occurs in `question` removed:
    those words are the held-out phrasing's, and a list holding them would answer it by lookup."""
    def kept(table: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return {key: tuple(w for w in words if normalise_text(w) not in question) for key, words in table.items()}

    return dataclasses.replace(understanding, attribute_synonyms=kept(understanding.attribute_synonyms),
                               attribute_questions=kept(understanding.attribute_questions),
                               attribute_examples=kept(understanding.attribute_examples),
                               value_shape_questions=kept(understanding.value_shape_questions))


def shapes(config_path: str | None) -> None:
    """Per KB and attribute: asked attribute linked first / asked record's MRR@10, with every form as it is and
    with the forms (and list entries) that occur in each question's wording held out."""
    import tempfile

    from kb_service.ingest.loading import load_files

    print("| KB, attribute | linked first | MRR@10 | linked first, forms held out | MRR@10, forms held out |")
    print("|---|---|---|---|---|")
    for make in (workshop, gadgets, poems, trails):
        records, questions = make()
        attribute_of = {r["kid"]: r["attribute"] for r in records}
        wordings: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for text, kid, name in questions:
            typed = next(form for form in (name, name.lower(), name.lower().replace("-", " "),
                                           name.lower().replace(",", ""),
                                           name.lower().replace("-", " ").replace(",", "")) if form in text)
            wordings[text.replace(typed, "{}")].append((text, kid))
        with tempfile.TemporaryDirectory() as folder:
            base = dataclasses.replace(load_config(config_path), data_dir=folder)
            load_files(Runtime(base), [str(write_jsonl(records, Path(folder) / "kb.jsonl"))])
            service = SearchService(Runtime(base))
            rows: dict[str, list[tuple[bool, float, bool, float]]] = defaultdict(list)
            for number, (wording, members) in enumerate(sorted(wordings.items())):
                measured = []
                for held_out in (False, True):
                    understanding = (_without_words_in(base.query_understanding, normalise_text(wording.replace(
                        "{}", " "))) if held_out else base.query_understanding)
                    service.reload_config(dataclasses.replace(base, version=f"shapes-{number}-{held_out}",
                                                              query_understanding=understanding))
                    measured.append([_linked_and_rank(service, text, kid, attribute_of) for text, kid in members])
                for (kid, plain, held) in zip((kid for _, kid in members), *measured, strict=True):
                    rows[attribute_of[kid]].append((*plain, *held))
        every = [row for group in rows.values() for row in group]
        print(f"| {make.__name__} (n={len(every)}) | {_column_means(every)} |")
        for attribute, group in rows.items():
            print(f"|   {attribute} | {_column_means(group)} |")


def _column_means(rows: list[tuple]) -> str:
    return " | ".join(f"{statistics.fmean(column):.3f}" for column in zip(*rows, strict=True))


def _linked_and_rank(service: SearchService, text: str, kid: str, attribute_of: dict[str, str]) -> tuple[bool, float]:
    parsed = service.understand(text)
    hits = service.search(SearchRequest(query=text, size=10)).hits
    rank = next((rank for rank, hit in enumerate(hits, 1) if hit.record.kid == kid), None)
    return bool(parsed.attributes) and parsed.attributes[0].name == attribute_of[kid], 1 / rank if rank else 0.0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--shapes"]:
        shapes(sys.argv[3] if sys.argv[2:3] == ["--config"] else None)
    elif sys.argv[1:2] == ["--leave-phrasing-out"]:
        for argument in sys.argv[2:]:
            folder, _, data_dir = argument.partition("=")
            leave_phrasing_out(Path(folder), Path(data_dir))
    else:
        main(sys.argv[1:])
