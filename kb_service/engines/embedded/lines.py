"""A file of newline-terminated lines, memory-mapped, read line by line without parsing the rest.

Versions store per-record text this way (the records themselves, each text field's segmented form): opening a
version then costs one scan for newlines instead of parsing a million strings, only the lines a search
touches are ever decoded, and worker processes share the file's pages.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable
from pathlib import Path

import numpy as np

SCAN_CHUNK = 1 << 26


class MappedLines:
    def __init__(self, path: Path):
        with open(path, "rb") as handle:
            self._buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else b""
        view = np.frombuffer(self._buffer, dtype=np.uint8) if len(self._buffer) else np.zeros(0, dtype=np.uint8)
        ends = [np.flatnonzero(view[start:start + SCAN_CHUNK] == 10) + start
                for start in range(0, view.size, SCAN_CHUNK)]
        self._ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> bytes:
        """Line `index` without its newline; IndexError beyond the last."""
        if not 0 <= index < len(self._ends):
            raise IndexError(index)
        start = int(self._ends[index - 1]) + 1 if index else 0
        return self._buffer[start:int(self._ends[index])]

    @staticmethod
    def write(path: Path, lines: Iterable[str]) -> None:
        """`lines` (strings without newlines) as UTF-8, one per line."""
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            for line in lines:
                handle.write(line + "\n")
