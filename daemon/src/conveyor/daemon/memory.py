"""What the daemon's memory allocator may keep after a burst of work, and
giving back what it can once the burst is over.

glibc's ``malloc`` gives each thread that allocates while another holds an
arena an arena of its own, up to eight per core, and never gives an arena
back. A burst of runs uses a few dozen threads at once (the API's workers,
trio's worker threads), so it left a dozen arenas behind, each holding
memory the burst freed. :func:`limit_malloc_arenas` caps them at one per
core (at least two) before any thread starts; measured with ``make bench``
(``concurrent``: RSS kept after the burst), see docs/operations.md.

``MALLOC_ARENA_MAX`` in the daemon's environment wins: glibc read it at
start-up, and the cap is left alone.

Once no run has been queued or active for :data:`IDLE_DELAY` s after a
burst, :class:`IdleRelease` empties the store's page caches (they fill
again from the file system's cache on the next reads) and has ``malloc``
give its free pages back to the system (``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Awaitable, Callable

import trio

from conveyor.daemon.libc import glibc

log = logging.getLogger(__name__)

#: ``mallopt``'s parameter for the number of arenas (glibc's malloc.h).
M_ARENA_MAX = -8
#: Seconds with no run queued or active before memory is given back.
IDLE_DELAY = 0.5


def arena_cap() -> int:
    """The cap :func:`limit_malloc_arenas` sets: one arena per core, at least two."""
    return max(2, os.cpu_count() or 2)


def limit_malloc_arenas(count: int | None = None) -> bool:
    """Cap glibc's malloc arenas at ``count`` (default :func:`arena_cap`).
    False when the C library is not glibc, or ``MALLOC_ARENA_MAX`` is set."""
    mallopt = glibc("mallopt", ctypes.c_int, ctypes.c_int)
    if "MALLOC_ARENA_MAX" in os.environ or mallopt is None:
        return False
    done = bool(mallopt(M_ARENA_MAX, count or arena_cap()))
    if not done:
        log.debug("mallopt(M_ARENA_MAX) was refused; malloc keeps its default arenas")
    return done


def trim_malloc() -> bool:
    """Have glibc's ``malloc`` give its free pages back to the system
    (blocking: it walks every arena). False when the C library is not glibc."""
    malloc_trim = glibc("malloc_trim", ctypes.c_size_t)
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


async def release_memory(shrink_caches: Callable[[], Awaitable[None]]) -> None:
    """Empty the caches (``shrink_caches()``), then :func:`trim_malloc` in a
    worker thread."""
    await shrink_caches()
    await trio.to_thread.run_sync(trim_malloc)


class IdleRelease:
    """Gives memory back once the daemon has been idle for ``delay`` s.

    :meth:`went_idle` (on the loop) says the last run ended; :meth:`serve`
    (a task) then waits ``delay`` s and, if ``is_idle()`` still holds, calls
    ``release()`` (see :func:`release_memory`).
    """

    def __init__(
        self,
        release: Callable[[], Awaitable[None]],
        is_idle: Callable[[], bool],
        *,
        delay: float = IDLE_DELAY,
    ) -> None:
        self._release = release
        self._is_idle = is_idle
        self.delay = delay
        self._wake = trio.Event()
        #: Times memory was given back.
        self.releases = 0

    def went_idle(self) -> None:
        self._wake.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(self.delay)
            if not self._is_idle():
                continue  # a run came meanwhile: its end says when to try again
            await self._release()
            self.releases += 1
