"""`heap.trim()`: the pages of freed heap blocks go back to the system (on glibc; a no-op elsewhere)."""

from __future__ import annotations

import ctypes
import ctypes.util
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
