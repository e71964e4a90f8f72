"""A normal client's search latency while twice `server.connection_limit` connections trickle request bytes.

Usage: python bench/slowloris.py --data-dir DIR [--limit 100] [--workers 1] [--searches 40] [--port 8890]

DIR must already serve a version (`KB_DATA_DIR=DIR kb load FILE`, or `kb demo`). A real `kb serve` starts with
`server.connection_limit` set to --limit; a normal client (a new connection per search, as a browser behind
no proxy would) measures its p50/p95 idle, then again while 2 × limit attacker connections each send one
header byte every half second and reconnect as soon as the server sheds them. Prints both rows, the ratio
of the p50s, how many attacker connections the server shed, and any failed search.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import REPO, Server

QUERIES = ["杭州的人口", "伦敦在哪个国家", "东京的英文名", "巴黎", "上海的时区", "北京的坐标"]


def normal_client(url: str, searches: int) -> tuple[list[float], int]:
    """Milliseconds per search (each on a new connection) and the number that failed."""
    times, failed = [], 0
    for n in range(searches):
        started = time.perf_counter()
        try:
            ok = requests.get(f"{url}/search", params={"q": QUERIES[n % len(QUERIES)]}, timeout=30).ok
        except requests.RequestException:
            ok = False
        times.append((time.perf_counter() - started) * 1000)
        failed += not ok
    return times, failed


class Trickle:
    """`count` connections that each send a header byte every half second, reopened when the server sheds
    them; stops by itself after `seconds`."""

    def __init__(self, port: int, count: int, seconds: float):
        self.port, self.count, self.until = port, count, time.monotonic() + seconds
        self.shed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sockets: list[socket.socket] = []
        while not self.stop.is_set() and time.monotonic() < self.until:
            while len(sockets) < self.count:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.sendall(b"GET /search?q=x HTTP/1.1\r\nHost: bench\r\n")
                sockets.append(sock)
            for sock in list(sockets):
                try:
                    sock.sendall(b"X")
                except OSError:
                    sockets.remove(sock)
                    sock.close()
                    self.shed += 1
            self.stop.wait(0.5)
        for sock in sockets:
            sock.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def row(label: str, times: list[float], failed: int) -> str:
    return (f"| {label} | {np.percentile(times, 50):.1f} | {np.percentile(times, 95):.1f} | {max(times):.1f} | "
            f"{failed} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--searches", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--port", type=int, default=8890)
    args = parser.parse_args()
    config = Path(tempfile.mkdtemp(prefix="kb-slowloris-")) / "config.yaml"
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    config.write_text(text.replace("  connection_limit: 200 ", f"  connection_limit: {args.limit} "),
                      encoding="utf-8")
    port = args.port
    server = Server(config, args.data_dir.resolve(), port, workers=args.workers)
    try:
        normal_client(server.url, 5)  # warm the encoder and caches
        idle = normal_client(server.url, args.searches)
        attack = Trickle(port, 2 * args.limit, args.seconds)
        time.sleep(2)  # let the trickling connections fill the server
        loaded = normal_client(server.url, args.searches)
        attack.close()
    finally:
        server.close()
    print(f"connection_limit {args.limit} per worker, {args.workers} worker(s), {2 * args.limit} trickling "
          f"connections, {args.searches} searches each\n")
    print("| normal client | p50 ms | p95 ms | max ms | failed |\n|---|---|---|---|---|")
    print(row("idle", *idle))
    print(row(f"{2 * args.limit} trickling", *loaded))
    print(f"\np50 ratio {np.percentile(loaded[0], 50) / np.percentile(idle[0], 50):.2f}; attacker connections "
          f"shed by the server: {attack.shed}")


if __name__ == "__main__":
    main()
