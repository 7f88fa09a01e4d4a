"""`heap.trim()`: the pages of freed heap blocks go back to the system (on glibc; a no-op elsewhere)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

import pytest

from mlm_tui import heap

BLOCK = 64 * 1024  # under glibc's threshold for a block of its own: from the heap


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_holes_in_the_heap_are_given_back() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(1600)]  # 100 MB
    for block in blocks:
        ctypes.memset(block, 1, BLOCK)  # touched: resident
    for i, block in enumerate(blocks):
        if i % 16:  # every 16th stays, so what is freed is holes, not the heap's top
            libc.free(block)
    before = rss_mb()
    heap.trim()
    after = rss_mb()
    for block in blocks[::16]:
        libc.free(block)
    assert before - after > 50


MAPPED_AFTER = r"""
import ctypes, torch
from mlm_tui import heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = MallInfo2

def mapped_mb(mb):
    before = mallinfo2().hblkhd
    block = torch.empty(mb * 2**20, dtype=torch.uint8)
    mapped = (mallinfo2().hblkhd - before) / 2**20
    del block
    return round(mapped)

mapped_mb(30)  # a block of its own, freed: glibc's own threshold rises to 30 MB
print(mapped_mb(20), mapped_mb(1), heap.map_large_blocks(), mapped_mb(20), mapped_mb(1))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_training_process_maps_its_large_blocks_on_their_own() -> None:
    """After `map_large_blocks()` a 20 MB block is a mapping of its own (given back when freed), where
    glibc's rising threshold had taken it from the heap; a 1 MB block stays in the heap. A threshold the
    user set stands."""
    import subprocess
    import sys

    def run(env: dict[str, str]) -> list[str]:
        done = subprocess.run([sys.executable, "-c", MAPPED_AFTER], capture_output=True, text=True,
                              env={**os.environ, **env}, check=True)
        return done.stdout.split()

    assert run({}) == ["0", "0", "True", "20", "0"]
    assert run({"MALLOC_MMAP_THRESHOLD_": str(64 * 2**20)}) == ["0", "0", "False", "0", "0"]
