"""Give the memory a process's allocator holds free back to the system, between phases of a run.

glibc's allocator keeps what a training step frees for the next step's reuse, spread in holes through
its heap, and gives back only the top of the heap. An evaluation between steps needs blocks of other
sizes, which it takes from the top: the heap grew by about 70 MB for the evaluation after a `starter`
run's ten steps and made the run's peak (README, "Memory of a training run"). `trim()` at such a phase
boundary gives the holes' pages back (`malloc_trim`): what the next phase reuses it faults in again.
Between the steps themselves it would cost speed (every step faulting its activations in again), so it is
not called there. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


def trim() -> None:
    """Give the allocator's free pages back to the system, where the allocator can (glibc)."""
    malloc_trim = _malloc_trim()
    if malloc_trim is not None:
        malloc_trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
