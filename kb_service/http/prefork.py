"""A pre-fork process manager for waitress: one listening socket, N worker processes forked from a parent
that has already loaded the encoder and opened the served version, so their memory is shared copy-on-write.

Why not gunicorn: its request-line parsers (C and Python) refuse raw UTF-8 in the request line, which
`curl 'localhost:8000/search?q=杭州的人口'` sends, and patching them means patching gunicorn's internals; its
sync and gthread workers also expect a buffering proxy in front. Waitress buffers slow clients itself and
already carries the lenient request-line parser (server.py); what it lacks, processes, is this module.

The parent never answers requests. It forks the workers, restarts one that dies (telling the metrics
collector the old one is gone) and runs the reload schedule exactly once. It holds the served version only
while it forks: opened (the one CURRENT names) before a fork so that a new worker starts on it, let go once
the workers are forked, since each worker follows CURRENT on its own from then on. A parent that followed
every reload would open each version only to hold it, and its heap would grow with the reloads.

Deploys and faults, without a failed request:
- SIGTERM or SIGINT: every worker drains (accepts nothing more, answers what is in flight within
  `server.drain_s`), then the parent exits.
- SIGHUP: the parent re-reads the config (`reconfigure`), then replaces the workers one at a time: the new
  one is answering before the old one is told to drain.
- A worker whose heartbeat (its event loop and a request thread both working, about once a second) stops
  for `server.worker_timeout_s` is killed and replaced.
- Workers ask the kernel for SIGTERM when the parent dies (PR_SET_PDEATHSIG), so a `kill -9` of the parent
  leaves no worker holding the port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from kb_service.lifetime import end_with_parent

log = logging.getLogger(__name__)
RESPAWN_BACKOFF_S = (0.5, 1, 2, 5, 10)  # a worker that keeps dying is restarted ever more slowly
READY_TIMEOUT_S = 60.0  # a new worker in a rolling restart must beat within this long, else the roll stops


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's non-blocking listening socket (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=1024)
    listener.setblocking(False)
    return listener


@dataclass
class Worker:
    """A forked worker as the parent sees it: its slot, its heartbeat pipe and when it last beat."""

    number: int
    beats: int  # the read end of its heartbeat pipe
    started: float
    last_beat: float
    ready: bool = False


class Prefork:
    """Runs `work(listener, heartbeat)` in `workers` forked processes until the parent is told to stop."""

    def __init__(self, host: str, port: int, workers: int, work: Callable[[socket.socket, Callable[[], None]], None],
                 on_worker_exit: Callable[[int], None] = lambda pid: None,
                 before_forks: Callable[[], None] = lambda: None, after_forks: Callable[[], None] = lambda: None,
                 reconfigure: Callable[[], None] = lambda: None, drain_s: float = 30.0,
                 worker_timeout_s: float = 30.0):
        """`before_forks` runs in the parent before it forks one or more workers (the server opens the served
        version there) and `after_forks` once they are forked (it lets the version go); `reconfigure` runs on
        SIGHUP before the workers are replaced (the server re-reads its config there, so the new workers start
        with it)."""
        self.listener = listening_socket(host, port)
        self.workers = workers
        self.work = work
        self.on_worker_exit = on_worker_exit
        self.before_forks = before_forks
        self.after_forks = after_forks
        self._forking_depth = 0  # a death recovered from while a roll forks must not let the version go
        self.reconfigure = reconfigure
        self.drain_s = drain_s
        self.worker_timeout_s = worker_timeout_s
        self.children: dict[int, Worker] = {}  # pid → worker
        self.retiring: set[int] = set()  # pids told to drain: their exit is not a death to recover from
        self.failures: dict[int, int] = {}  # worker number → consecutive quick deaths
        self.stopping = False
        self.rolling = False

    def _spawn(self, number: int) -> int:
        parent = os.getpid()
        beats, beat_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling until the server installs its drain, then serve
            os.close(beats)
            for other in self.children.values():
                os.close(other.beats)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            end_with_parent(signal.SIGTERM, parent)  # SIGTERM drains it
            os.set_blocking(beat_end, False)

            def heartbeat() -> None:
                with contextlib.suppress(BlockingIOError, BrokenPipeError):
                    os.write(beat_end, b".")

            code = 0
            try:
                self.work(self.listener, heartbeat)
            except BaseException:
                log.exception("worker %d stopped", number)
                code = 1
            finally:
                os._exit(code)
        os.close(beat_end)
        os.set_blocking(beats, False)
        now = time.monotonic()
        self.children[pid] = Worker(number, beats, now, now)
        log.info("worker %d started (pid %d)", number, pid)
        return pid

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def _roll_signal(self, signum, frame) -> None:
        self.rolling = True

    def _read_beats(self) -> None:
        now = time.monotonic()
        for worker in self.children.values():
            try:
                if os.read(worker.beats, 4096):
                    worker.last_beat, worker.ready = now, True
            except BlockingIOError:
                pass

    def _watch(self) -> None:
        """Kill a worker whose heartbeat stopped; its exit is then handled like any death (replaced)."""
        now = time.monotonic()
        for pid, worker in self.children.items():
            if pid not in self.retiring and now - worker.last_beat > self.worker_timeout_s:
                log.error("worker %d (pid %d) has not answered for %.0f s (server.worker_timeout_s); replacing it",
                          worker.number, pid, now - worker.last_beat)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                worker.last_beat = now  # one kill per timeout

    def _reap(self, pid: int = -1, block: bool = False) -> int:
        """Collect an exited worker (`pid`, or any; waiting for it when `block`): a retiring one is let go,
        any other death is recovered from. Returns the pid collected, 0 when none had exited."""
        try:
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # already collected
            done, status = max(pid, 0), 0
        worker = self.children.pop(done, None) if done else None
        if worker is None:
            return done
        os.close(worker.beats)
        self.on_worker_exit(done)
        if done in self.retiring:
            self.retiring.discard(done)
        elif not self.stopping:
            self._recover(done, worker, status)
        return done

    def _recover(self, pid: int, worker: Worker, status: int) -> None:
        quick = time.monotonic() - worker.started < 30
        self.failures[worker.number] = self.failures.get(worker.number, 0) + 1 if quick else 0
        delay = RESPAWN_BACKOFF_S[min(self.failures[worker.number], len(RESPAWN_BACKOFF_S) - 1)]
        log.error("worker %d (pid %d) exited with status %d; restarting it in %.1fs", worker.number, pid,
                  os.waitstatus_to_exitcode(status), delay)
        time.sleep(delay)
        with self._forking():
            self._spawn(worker.number)

    @contextlib.contextmanager
    def _forking(self):
        if self._forking_depth == 0:
            self.before_forks()
        self._forking_depth += 1
        try:
            yield
        finally:
            self._forking_depth -= 1
            if self._forking_depth == 0:
                self.after_forks()

    def _retire(self, pid: int) -> None:
        """Tell one worker to drain and wait for it (killed if it outlasts the drain)."""
        self.retiring.add(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.drain_s + 5
        while pid in self.children and time.monotonic() < deadline:
            if not self._reap(pid):
                time.sleep(0.05)
        if pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._reap(pid, block=True)

    def _roll(self) -> None:
        """Replace every worker, one at a time: the new one beats (it is serving) before the old one drains."""
        try:
            self.reconfigure()
        except Exception:
            log.exception("SIGHUP: the config could not be applied; the workers keep running as they are")
            return
        with self._forking():
            self._replace_all()

    def _replace_all(self) -> None:
        for old_pid, old in sorted(self.children.items(), key=lambda item: item[1].number):
            if old_pid in self.retiring or self.stopping:
                continue
            new_pid = self._spawn(old.number)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while new_pid in self.children and not self.children[new_pid].ready and time.monotonic() < deadline:
                self._read_beats()
                time.sleep(0.05)
            if new_pid not in self.children or not self.children[new_pid].ready:
                log.error("SIGHUP: the new worker %d did not start serving; keeping the old ones", old.number)
                if new_pid in self.children:
                    self._retire(new_pid)
                return
            self._retire(old_pid)
        log.info("SIGHUP: every worker replaced")

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._roll_signal)
        with self._forking():
            for number in range(1, self.workers + 1):
                self._spawn(number)
        while not self.stopping:
            if self.rolling:
                self.rolling = False
                self._roll()
            if self._reap():
                continue
            self._read_beats()
            self._watch()
            time.sleep(0.2)
        self.shutdown()

    def shutdown(self) -> None:
        """The port closes (as each worker lets go of it, new connections are refused, not queued for no one),
        every worker drains (SIGTERM), then whatever outlasts `drain_s` is killed."""
        self.listener.close()
        for pid in list(self.children):
            self.retiring.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.drain_s + 5
        while self.children and time.monotonic() < deadline:
            if not self._reap():
                time.sleep(0.05)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._reap(pid, block=True)
        log.info("stopped")
