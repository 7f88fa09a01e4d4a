"""How a training process's allocator keeps memory: the heap's free pages given back between phases of a
run, and the largest blocks of a step kept out of the heap.

glibc's allocator keeps what a training step frees for the next step's reuse, spread in holes through
its heap, and gives back only the top of the heap. An evaluation between steps needs blocks of other
sizes, which it takes from the top: the heap grew by about 70 MB for the evaluation after a `starter`
run's ten steps and made the run's peak (README, "Memory of a training run"). `trim()` at such a phase
boundary gives the holes' pages back (`malloc_trim`): what the next phase reuses it faults in again.
Between the steps themselves it would cost speed (every step faulting its activations in again), so it is
not called there.

Within the steps, the head's two blocks of 16 MB and more (its bf16 weight copy and the logits, whose
size changes with each batch's masked count) taken from the heap and freed at every step kept the heap
growing over a run's steps; glibc's own threshold for a block of its own rises to 32 MB once a block
that large is freed. `map_large_blocks()` fixes the threshold at 16 MB for the process: the run's peak
RSS fell by about 25 MB and stopped creeping, for at most 3% of tokens/s in an A/B (two blocks a step
mapped afresh and faulted in).
Elsewhere than glibc (macOS, musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt's parameter (malloc.h)
LARGE_BLOCK = 16 * 2**20  # a training process's blocks of this size and more: each its own mapping


def trim() -> None:
    """Give the allocator's free pages back to the system, where the allocator can (glibc)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def map_large_blocks() -> bool:
    """Give each block of LARGE_BLOCK bytes and more a mapping of its own for the rest of the process,
    unmapped when freed (glibc). A threshold the user set (`MALLOC_MMAP_THRESHOLD_`) is left as it is.
    Whether it was set."""
    libc = _glibc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK))


@functools.cache
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
