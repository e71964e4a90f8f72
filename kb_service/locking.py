"""Exclusive file locks that refuse rather than wait: a second build or reload is told at once who holds it."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: Path, refusal: Callable[[Path], Exception]) -> Iterator[None]:
    """Holds a non-blocking `flock` on `path` for the block (every process on the host sees it, and the
    kernel drops it when its holder dies); raises `refusal(path)` when another holder has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refusal(path) from None
        yield
