"""Soak: a real `kb serve` under steady mixed searches for a bounded time, with a reload every few minutes.

Usage: python bench/soak.py --kb ../shared/data/geo/kb.jsonl.gz --queries ../shared/data/geo/queries.dev.jsonl \
           --minutes 20 --reload-every 2 [--rate 20]
Builds a fresh data directory from the KB (reloads read the same file through `reload.files`), then sends
searches from 4 client threads at about `rate` requests/s in total (exact and fast, explain on some) and
POSTs /admin/reload every `reload-every` minutes. Every 10 s it samples the server's resident memory (RSS,
from /proc) and open file descriptors; it prints errors, reloads and the least-squares slope of both series
(per minute, over the second half of the run, after warm-up), which a leak turns positive.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import REPO, Server
from kb_service.http.auth import new_key


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, in value per minute."""
    if len(samples) < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_v = sum(v for _, v in samples) / len(samples)
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    variance = sum((t - mean_t) ** 2 for t, _ in samples)
    return 60.0 * covariance / variance if variance else 0.0


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", required=True)
    parser.add_argument("--queries", required=True)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--reload-every", type=float, default=2)
    parser.add_argument("--rate", type=float, default=20, help="searches per second, all clients together")
    parser.add_argument("--cache", help="an existing data directory's cache/ to reuse (embeddings, segmentation)")
    args = parser.parse_args()
    texts = [json.loads(line)["query"] for line in Path(args.queries).read_text(encoding="utf-8").splitlines()]
    work = Path(tempfile.mkdtemp(prefix="kb-soak-"))
    key, digest = new_key()
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    text = text.replace("  files: []  ", f"  files: [{Path(args.kb).resolve()}]  ")
    text = text.replace("  admin_key_sha256: []", f"  admin_key_sha256: [{digest}]")
    config = work / "config.yaml"
    config.write_text(text, encoding="utf-8")
    environment = {**os.environ, "KB_DATA_DIR": str(work / "data"), "KB_CONFIG": str(config)}
    if args.cache:
        (work / "data").mkdir()
        (work / "data" / "cache").symlink_to(Path(args.cache).resolve(), target_is_directory=True)
    started = time.monotonic()
    os.spawnvpe(os.P_WAIT, sys.executable, [sys.executable, "-m", "kb_service.cli", "load", args.kb], environment)
    print(f"loaded {args.kb} in {time.monotonic() - started:.0f}s", flush=True)
    server = Server(config, work / "data", 8765)
    stop = threading.Event()
    counts = {"searches": 0, "errors": 0, "reloads": 0, "reload_failures": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        pause = 4 / args.rate
        while not stop.is_set():
            params = {"q": rng.choice(texts), "mode": rng.choice(["exact", "fast"]),
                      "explain": str(rng.random() < 0.2).lower()}
            try:
                response = session.get(f"{server.url}/search", params=params, timeout=30)
                ok = response.status_code == 200
                detail = f"{response.status_code} {response.text[:120]}"
            except requests.RequestException as err:
                ok, detail = False, str(err)
            with lock:
                counts["searches"] += 1
                if not ok:
                    counts["errors"] += 1
                    errors.append(detail)
            time.sleep(pause)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    samples: list[tuple[float, float, float]] = []
    begin = time.monotonic()
    next_reload = begin + args.reload_every * 60
    try:
        while (elapsed := time.monotonic() - begin) < args.minutes * 60:
            samples.append((elapsed, resident_mb(server.process.pid),
                            len(os.listdir(f"/proc/{server.process.pid}/fd"))))
            if time.monotonic() >= next_reload:
                answer = requests.post(f"{server.url}/admin/reload", json={"wait": True, "force": True},
                                       headers={"X-API-Key": key}, timeout=600)
                counts["reloads"] += 1
                counts["reload_failures"] += answer.status_code != 200
                next_reload += args.reload_every * 60
            print(f"{elapsed / 60:5.1f} min: {counts['searches']} searches, {counts['errors']} errors, "
                  f"{counts['reloads']} reloads, RSS {samples[-1][1]:.0f} MB, {samples[-1][2]:.0f} fds", flush=True)
            time.sleep(10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        server.close()
    settled = [s for s in samples if s[0] >= args.minutes * 30]
    print(f"soak {args.minutes:g} min: {counts['searches']} searches, {counts['errors']} errors, "
          f"{counts['reloads']} reloads ({counts['reload_failures']} failed); second half: RSS slope "
          f"{slope_per_minute([(t, m) for t, m, _ in settled]):+.2f} MB/min (from {settled[0][1]:.0f} to "
          f"{settled[-1][1]:.0f} MB), fd slope {slope_per_minute([(t, f) for t, _, f in settled]):+.3f}/min "
          f"(from {settled[0][2]:.0f} to {settled[-1][2]:.0f})")
    for detail in errors[:5]:
        print(f"  error: {detail}")


if __name__ == "__main__":
    main()
