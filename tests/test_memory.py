"""A build's freed heap goes back to the system instead of staying resident in the server."""

import subprocess
import sys

import pytest

from kb_service.memory import release_free_heap

# In a fresh interpreter: 240 MB of 60 kB objects (below glibc's mmap threshold, so on the heap), one in fifty
# kept alive so the freed space lies between live blocks, where glibc does not trim it by itself.
PROGRAM = """
from kb_service.memory import release_free_heap
def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
base = resident_mb()
blocks = [bytes(60_000) + bytes([i % 256]) for i in range(4000)]
kept = blocks[::50]
del blocks
freed = resident_mb()
released = release_free_heap()
print(base, freed, resident_mb(), released)
"""


@pytest.mark.skipif(not release_free_heap(), reason="the C library has no malloc_trim (not glibc)")
def test_freed_heap_between_live_blocks_is_returned_to_the_system():
    base, freed, trimmed, released = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True,
                                                    text=True, check=True).stdout.split()
    base_mb, freed_mb, trimmed_mb = float(base), float(freed), float(trimmed)
    assert released == "True" and freed_mb - base_mb > 150  # the allocator kept what was freed …
    assert trimmed_mb - base_mb < (freed_mb - base_mb) / 4  # … until it was asked to return it


def test_a_version_no_longer_served_is_released_at_once(tmp_path, capital_kb_file):
    """With the cyclic collector off, as it mostly is between a server's rare full collections: once the
    service switches to a new version, the old one is freed by reference counting alone, its files closed."""
    import gc
    import os
    import weakref
    from pathlib import Path

    from scoring.planner import SearchRequest
    from tests.conftest import loaded, serving

    data_dir = loaded(tmp_path / "data", capital_kb_file)
    service = serving(data_dir)
    assert service.search(SearchRequest(query="法国的首都", size=3)).hits
    first = weakref.ref(service.state.version)
    first_dir = str(service.state.version.directory)

    def open_in(directory: str) -> int:
        return sum(os.readlink(f"/proc/self/fd/{fd}").startswith(directory) for fd in os.listdir("/proc/self/fd")
                   if Path(f"/proc/self/fd/{fd}").is_symlink())

    assert open_in(first_dir) > 0
    gc.disable()
    try:
        loaded(data_dir, capital_kb_file)
        assert service.refresh() and service.search(SearchRequest(query="法国的首都", size=3)).hits
        assert first() is None and open_in(first_dir) == 0
    finally:
        gc.enable()
