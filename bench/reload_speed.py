"""A full reload from the review database against one after a small share of the records changed.

Usage: python bench/reload_speed.py --kb ../shared/data/idioms/kb.jsonl.gz [--change 0.01] [--cache DIR]
           [--profile]
Imports the KB into a fresh review database as approved, times `kb reload` (cold: every record encoded,
unless --cache names an existing embedding cache folder to share), changes the value of `change` of the
records (re-imported and approved, as an expert-reviewed batch would be), and times the second reload. With
--profile the second reload runs in this process under cProfile and the top functions are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import json
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import REPO


def kb(*args: str, data_dir: Path) -> str:
    environment = {**os.environ, "KB_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "kb_service.cli", *args], env=environment, cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"kb {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def timed_reload(data_dir: Path) -> tuple[float, dict]:
    started = time.monotonic()
    report = json.loads(kb("reload", "--json", data_dir=data_dir))
    return time.monotonic() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", required=True)
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--cache", help="an embedding cache folder to share (the first reload is then warm)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="kb-reload-"))
    if args.cache:
        (data_dir / "cache").symlink_to(Path(args.cache).resolve())
    kb("review", "import", args.kb, "--approve", "--reviewer", "bench", data_dir=data_dir)
    full, report = timed_reload(data_dir)
    print(f"full reload: {full:.1f} s ({report.get('counts', {})})", flush=True)
    opener = gzip.open if args.kb.endswith(".gz") else open
    with opener(args.kb, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    changed = random.Random(0).sample(rows, max(1, int(len(rows) * args.change)))
    edit = time.strftime("%Y%m%dT%H%M%S")  # new text each run, so a shared cache never holds the edits
    batch = data_dir / "changed.jsonl"
    with batch.open("w", encoding="utf-8") as handle:
        for row in changed:
            handle.write(json.dumps({**row, "value": f"{row['value']}（修订 {edit}）"}, ensure_ascii=False) + "\n")
    kb("review", "import", str(batch), "--approve", "--reviewer", "bench", data_dir=data_dir)
    if args.profile:
        os.environ["KB_DATA_DIR"] = str(data_dir)
        from kb_service.reload.run import run_reload
        from kb_service.runtime import Runtime

        profile = cProfile.Profile()
        started = time.monotonic()
        profile.enable()
        run = run_reload(Runtime.start(REPO / "config.yaml"))
        profile.disable()
        small = time.monotonic() - started
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        counts = run.counts
    else:
        small, report = timed_reload(data_dir)
        counts = report.get("counts", {})
    print(f"{len(changed):,} records changed ({args.change:.0%}): reload {small:.1f} s ({counts}); "
          f"full {full:.1f} s, {full / small:.1f}× faster")


if __name__ == "__main__":
    main()
