"""A pre-fork process manager for waitress: one listening socket, N worker processes forked from a parent
that has already loaded the encoder and opened the served version, so their memory is shared copy-on-write.

Why not gunicorn: its request-line parsers (C and Python) refuse raw UTF-8 in the request line, which
`curl 'localhost:8000/search?q=杭州的人口'` sends, and patching them means patching gunicorn's internals; its
sync and gthread workers also expect a buffering proxy in front. Waitress buffers slow clients itself and
already carries the lenient request-line parser (server.py); what it lacks, processes, is this module.

The parent never answers requests. It forks the workers, restarts one that dies (telling the metrics
collector the old one is gone), runs the reload schedule exactly once, and on SIGTERM or SIGINT stops the
workers and exits. Each worker follows CURRENT on its own, as a single-process server does; the parent
follows it too, so that a worker forked to replace a dead one starts on the served version, and a pruned
version's files are not held open by the parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
RESPAWN_BACKOFF_S = (0.5, 1, 2, 5, 10)  # a worker that keeps dying is restarted ever more slowly


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's non-blocking listening socket (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=1024)
    listener.setblocking(False)
    return listener


class Prefork:
    """Runs `work(listener)` in `workers` forked processes until the parent is told to stop."""

    def __init__(self, host: str, port: int, workers: int, work: Callable[[socket.socket], None],
                 on_worker_exit: Callable[[int], None] = lambda pid: None, tick: Callable[[], None] = lambda: None):
        """`tick` runs in the parent about once a second between worker exits (the server keeps the parent on
        the served version with it, so a replacement worker starts on that version)."""
        self.listener = listening_socket(host, port)
        self.workers = workers
        self.work = work
        self.on_worker_exit = on_worker_exit
        self.tick = tick
        self.children: dict[int, int] = {}  # pid → worker number
        self.failures: dict[int, int] = {}  # worker number → consecutive quick deaths
        self.stopping = False

    def _spawn(self, number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling, serve until killed
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                self.work(self.listener)
            except BaseException:
                log.exception("worker %d stopped", number)
                code = 1
            finally:
                os._exit(code)
        self.children[pid] = number
        log.info("worker %d started (pid %d)", number, pid)

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for number in range(1, self.workers + 1):
            self._spawn(number)
        started = {number: time.monotonic() for number in self.children.values()}
        ticked = time.monotonic()
        while not self.stopping:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                if time.monotonic() - ticked >= 1.0:
                    self.tick()
                    ticked = time.monotonic()
                time.sleep(0.2)
                continue
            number = self.children.pop(pid, None)
            if number is None:
                continue
            self.on_worker_exit(pid)
            if self.stopping:
                break
            quick = time.monotonic() - started[number] < 30
            self.failures[number] = self.failures.get(number, 0) + 1 if quick else 0
            delay = RESPAWN_BACKOFF_S[min(self.failures[number], len(RESPAWN_BACKOFF_S) - 1)]
            log.error("worker %d (pid %d) exited with status %d; restarting it in %.1fs", number, pid,
                      os.waitstatus_to_exitcode(status), delay)
            time.sleep(delay)
            self._spawn(number)
            started[number] = time.monotonic()
        self.shutdown()

    def shutdown(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.on_worker_exit(pid)
                self.children.pop(pid, None)
            else:
                time.sleep(0.05)
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.listener.close()
        log.info("stopped")
