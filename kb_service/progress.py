"""Periodic progress lines with rate and ETA, readable both on a terminal and in a log file."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("kb_service.progress")


class Progress:
    def __init__(self, label: str, total: int | None, every_seconds: float = 5.0):
        self.label = label
        self.total = total
        self.done = 0
        self.every = every_seconds
        self.started = self._last = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.every or (self.total is not None and self.done >= self.total):
            self._last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total is None:
            return f"{self.label}: {self.done:,} so far, {rate:,.0f}/s"
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (f"{self.label}: {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:,.0f}/s, ETA {eta:,.0f}s")
