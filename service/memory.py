"""Keeping the service's memory near what its jobs use, and giving it back after a burst.

glibc's malloc gives each thread that allocates at once its own arena (up to 8 per core) and
keeps what a thread freed in that arena, for reuse. After a burst of large uploads (decoded
images, their bands, the upload bytes) the service process stayed gigabytes above its idle
size, the memory free in a dozen arenas but never returned. Two calls fix that:
`limit_arenas` caps the arenas at the number of jobs that run at once, and `malloc_trim`
returns every free page of every arena to the system once the burst is over. Elsewhere than
on glibc neither exists and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# mallopt's parameter number for the most arenas (glibc's malloc.h).
_M_ARENA_MAX = -8


def _glibc_function(name: str) -> Any | None:
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        return getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_function("malloc_trim")
_MALLOPT = _glibc_function("mallopt")


def limit_arenas(arenas: int) -> bool:
    """Let at most `arenas` malloc arenas exist from now on; False where that is not possible."""
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(ctypes.c_int(_M_ARENA_MAX), ctypes.c_int(max(1, arenas))))


def release_free_memory() -> bool:
    """Return the allocator's free memory to the system; False where that is not possible."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(ctypes.c_size_t(0))
    return True


class BurstTracker:
    """Counts the jobs in flight and calls `on_idle` each time the last one ends.

    Trimming while other jobs run would cost them time and win little: they are about to
    allocate again. Once none runs, the memory of the whole burst is free to return.
    """

    def __init__(self, on_idle: Callable[[], object] = release_free_memory) -> None:
        self._on_idle = on_idle
        self._running = 0
        self._lock = threading.Lock()

    @contextmanager
    def job(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                idle = self._running == 0
            if idle:
                self._on_idle()
