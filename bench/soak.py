"""Soak: a real `kb serve` under steady mixed searches for a bounded time, with a reload every few minutes.

Usage: python bench/soak.py --kb ../shared/data/geo/kb.jsonl.gz --queries ../shared/data/geo/queries.dev.jsonl \
           --minutes 20 --reload-every 2 [--rate 20]
Builds a fresh data directory from the KB (reloads read the same file through `reload.files`), then sends
searches from 4 client threads at about `rate` requests/s in total (exact and fast, explain on some) and
POSTs /admin/reload every `reload-every` minutes. Every 10 s it samples, from /proc, the resident memory
(RSS) of the parent and of the worker that answers the searches and the reloads, the proportional set size
(PSS, shared pages split between the processes sharing them) of the whole server with any build process, and
the open file descriptors; it prints errors, reloads and the least-squares slopes (per minute, over the
second half of the run, after warm-up), which a leak turns positive.
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


def _kilobytes(path: str, field: str) -> float:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:  # the process ended between listing and reading
        return 0.0
    return next((float(line.split()[1]) for line in lines if line.startswith(field)), 0.0)


def resident_mb(pid: int) -> float:
    return _kilobytes(f"/proc/{pid}/status", "VmRSS:") / 1024


def children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def process_tree(pid: int) -> list[int]:
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in children(parent)]
        tree += frontier
    return tree


def sample(pid: int) -> dict[str, float]:
    """Parent RSS, the workers' RSS, the tree's PSS (MB) and the open file descriptors of parent and workers."""
    workers = [child for child in children(pid) if b"kb_service.reload.apart" not in _cmdline(child)]
    return {"parent": resident_mb(pid), "workers": sum(resident_mb(w) for w in workers),
            "pss": sum(_kilobytes(f"/proc/{p}/smaps_rollup", "Pss:") for p in process_tree(pid)) / 1024,
            "fds": sum(_fds(p) for p in [pid, *workers])}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", required=True)
    parser.add_argument("--queries", required=True)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--reload-every", type=float, default=2)
    parser.add_argument("--rate", type=float, default=20, help="searches per second, all clients together")
    parser.add_argument("--port", type=int, default=8765)
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
    server = Server(config, work / "data", args.port)
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
    samples: list[tuple[float, dict[str, float]]] = []
    begin = time.monotonic()
    next_reload = begin + args.reload_every * 60
    try:
        while (elapsed := time.monotonic() - begin) < args.minutes * 60:
            samples.append((elapsed, sample(server.process.pid)))
            if time.monotonic() >= next_reload:
                answer = requests.post(f"{server.url}/admin/reload", json={"wait": True, "force": True},
                                       headers={"X-API-Key": key}, timeout=600)
                counts["reloads"] += 1
                counts["reload_failures"] += answer.status_code != 200
                next_reload += args.reload_every * 60
            now = samples[-1][1]
            print(f"{elapsed / 60:5.1f} min: {counts['searches']} searches, {counts['errors']} errors, "
                  f"{counts['reloads']} reloads, RSS parent {now['parent']:.0f} MB, workers {now['workers']:.0f} MB, "
                  f"PSS {now['pss']:.0f} MB, {now['fds']:.0f} fds", flush=True)
            time.sleep(10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        server.close()
    settled = [s for s in samples if s[0] >= args.minutes * 30]
    print(f"soak {args.minutes:g} min: {counts['searches']} searches, {counts['errors']} errors, "
          f"{counts['reloads']} reloads ({counts['reload_failures']} failed); second half:")
    for name, unit in (("workers", "MB"), ("parent", "MB"), ("pss", "MB"), ("fds", "")):
        print(f"  {name:8} slope {slope_per_minute([(t, s[name]) for t, s in settled]):+.3f} {unit}/min "
              f"(from {settled[0][1][name]:.0f} to {settled[-1][1][name]:.0f}; first sample {samples[0][1][name]:.0f})")
    for detail in errors[:5]:
        print(f"  error: {detail}")


if __name__ == "__main__":
    main()
