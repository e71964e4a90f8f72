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
