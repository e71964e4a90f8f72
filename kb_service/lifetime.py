"""Processes that must not outlive the one that started them: a prefork worker, a reload's build process."""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1


def end_with_parent(signum: int, parent: int) -> None:
    """Asks the kernel to send `signum` to this process when the thread that started it ends (Linux only);
    sends it now if `parent` is already gone, since the request would then never fire."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)
