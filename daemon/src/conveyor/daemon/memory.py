"""What the daemon's memory allocator may keep after a burst of work.

glibc's ``malloc`` gives each thread that allocates while another holds an
arena an arena of its own, up to eight per core, and never gives an arena
back. A burst of runs uses a few dozen threads at once (the API's workers,
trio's worker threads), so it left a dozen arenas behind, each holding
memory the burst freed. :func:`limit_malloc_arenas` caps them at one per
core (at least two) before any thread starts; measured with ``make bench``
(``concurrent``: RSS kept after the burst), see docs/operations.md.

``MALLOC_ARENA_MAX`` in the daemon's environment wins: glibc read it at
start-up, and the cap is left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

#: ``mallopt``'s parameter for the number of arenas (glibc's malloc.h).
M_ARENA_MAX = -8


def arena_cap() -> int:
    """The cap :func:`limit_malloc_arenas` sets: one arena per core, at least two."""
    return max(2, os.cpu_count() or 2)


def limit_malloc_arenas(count: int | None = None) -> bool:
    """Cap glibc's malloc arenas at ``count`` (default :func:`arena_cap`).
    False when the C library is not glibc, or ``MALLOC_ARENA_MAX`` is set."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt to speak of)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_ARENA_MAX, count or arena_cap()))
    if not done:
        log.debug("mallopt(M_ARENA_MAX) was refused; malloc keeps its default arenas")
    return done
