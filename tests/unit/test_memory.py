"""The cap on glibc's malloc arenas, checked in a child process with glibc's
own report (``malloc_info``) after threads allocated at the same time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conveyor.daemon.memory import arena_cap

CHILD = textwrap.dedent(
    """
    import ctypes, sys, threading
    from conveyor.daemon.memory import limit_malloc_arenas
    print("capped" if limit_malloc_arenas(int(sys.argv[1])) else "left", flush=True)
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    start = threading.Barrier(16)

    def churn():
        start.wait()
        for _ in range(2000):
            libc.free(libc.malloc(4096))

    threads = [threading.Thread(target=churn) for _ in range(16)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc.fflush(None)
    libc.malloc_info(0, ctypes.c_void_p.in_dll(libc, "stdout"))
    libc.fflush(None)
    """
)


def _arenas(cap: int, env: dict[str, str] | None = None) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environ.update(env or {})
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(cap)],
        capture_output=True,
        text=True,
        check=True,
        env=environ,
        timeout=60,
    ).stdout
    said, _, report = out.partition("\n")
    return said, report.count("<heap nr=")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_cap_bounds_the_arenas_threads_get() -> None:
    said, arenas = _arenas(2)
    assert said == "capped" and 1 <= arenas <= 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_malloc_arena_max_in_the_environment_wins() -> None:
    said, arenas = _arenas(2, {"MALLOC_ARENA_MAX": "3"})
    assert said == "left" and arenas <= 3


def test_the_default_cap_is_one_arena_per_core_and_at_least_two() -> None:
    assert arena_cap() == max(2, os.cpu_count() or 2)
