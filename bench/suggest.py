"""Type-ahead: how often the entity a dev query asks about is in the top 5 when the user has typed only its
start (1–3 characters), its pinyin prefix, its full pinyin, its initials, or its pinyin with one typo; and
the latency of a suggestion (p50/p95 over every typed form).

Usage: python bench/suggest.py ../shared/data/geo [--large ../shared/data/geo/kb-large.jsonl.gz]
The dev entities are the ones the understander links, with confidence, in the data set's dev queries
(what users asked about); the dictionary is built from the KB file as a version build builds it. With
--large, the latency and the index's size and build time are also measured on kb-large's dictionary.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from pypinyin import lazy_pinyin

from kb_service.config import load_config
from kb_service.evaluation import read_queries
from kb_service.ingest.loading import build_dictionary
from kb_service.ingest.readers import read_records
from query_understanding import QueryUnderstander
from query_understanding.linking import pinyin_key
from query_understanding.segmenter import Segmenter
from query_understanding.suggest import SuggestIndex

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def typed_forms(name: str, rng: random.Random) -> dict[str, str]:
    """What a user may have typed on the way to `name`."""
    syllables = lazy_pinyin(name)
    sound = "".join(syllables)
    forms = {f"first {n}": name[:n] for n in (1, 2, 3) if len(name) > n}
    forms["pinyin prefix"] = syllables[0] + (syllables[1][:1] if len(syllables) > 1 else "")
    forms["full pinyin"] = sound
    forms["initials"] = "".join(s[0] for s in syllables)
    position = rng.randrange(1, len(sound))
    forms["pinyin, one typo"] = sound[:position] + rng.choice("aeioubdgkst".replace(sound[position], "")) + \
        sound[position + 1:]
    return forms


def build(kb_file: Path, config) -> tuple[SuggestIndex, object, float]:
    records = read_records([kb_file]).records
    dictionary = build_dictionary(records, config.query_understanding.alias_attributes)
    started = time.perf_counter()
    index = SuggestIndex.build(dictionary)
    return index, dictionary, time.perf_counter() - started


def latencies(index: SuggestIndex, typed: list[str]) -> list[float]:
    out = []
    for text in typed:
        started = time.perf_counter()
        index.suggest(text, 5)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--large", type=Path)
    args = parser.parse_args()
    config = load_config()
    rng = random.Random(0)
    index, dictionary, seconds = build(args.folder / "kb.jsonl.gz", config)
    understander = QueryUnderstander(config.query_understanding, dictionary, Segmenter(dictionary.user_words()))
    asked = []
    for query in read_queries(args.folder / "queries.dev.jsonl"):
        for entity in understander.parse(query.text).confident_entities():
            if pinyin_key(entity.name) and entity.name not in asked:
                asked.append(entity.name)
    found: dict[str, list[bool]] = {}
    keystrokes: list[float] = []
    typed_all = []
    for name in asked:
        for form, typed in typed_forms(name, rng).items():
            typed_all.append(typed)
            found.setdefault(form, []).append(name in [s.text for s in index.suggest(typed, 5)])
        found.setdefault("within 3 characters", []).append(
            any(name in [s.text for s in index.suggest(name[:n], 5)] for n in (1, 2, 3)))
        sound = "".join(lazy_pinyin(name))
        letters = next((n for n in range(1, len(sound) + 1)
                        if name in [s.text for s in index.suggest(sound[:n], 5)]), None)
        found.setdefault("by its pinyin, letter by letter", []).append(letters is not None)
        if letters is not None:
            keystrokes.append(letters / len(sound))
    times = latencies(index, typed_all)
    print(f"{args.folder.name}: {len(asked)} dev entities with Chinese names; index of {len(index.keys):,} keys "
          f"built in {seconds:.2f} s")
    print("| typed | in top 5 |\n|---|---|")
    for form, hits in found.items():
        print(f"| {form} | {sum(hits) / len(hits):.3f} ({sum(hits)}/{len(hits)}) |")
    print(f"pinyin letters typed until the entity shows in the top 5: {statistics.mean(keystrokes):.0%} of its "
          "pinyin on average")
    print(f"latency: p50 {statistics.median(times):.2f} ms, p95 {statistics.quantiles(times, n=20)[-1]:.2f} ms "
          f"({len(times)} suggestions)")
    if args.large:
        large, large_dictionary, seconds = build(args.large, config)
        names = rng.sample([n[0] for n in large_dictionary.entity_names.values() if pinyin_key(n[0])], 300)
        typed = [t for name in names for t in typed_forms(name, rng).values()]
        latencies(large, typed[:200])  # warm
        times = latencies(large, typed)
        print(f"kb-large: index of {len(large.keys):,} keys over {len(large.names):,} entities built in "
              f"{seconds:.2f} s, {large.keys.nbytes / 2**20:.0f} MiB of keys; latency p50 "
              f"{statistics.median(times):.2f} ms, p95 {statistics.quantiles(times, n=20)[-1]:.2f} ms")


if __name__ == "__main__":
    main()
