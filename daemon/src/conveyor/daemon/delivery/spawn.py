"""Start processes that outlive the daemon, and look after them by pid.

Replicas of the ``process`` target and the environments' front proxies
must keep serving while the daemon restarts (or after it was killed), so
they are not the daemon's children: a small launcher forks them into a
session of their own (not the daemon's process group), with stdin from
``/dev/null`` and stdout and stderr appended to a log file (no pipe to the
daemon), and exits; the process is then adopted by init. The launcher
reports an ``exec`` failure (no such program) through a close-on-exec pipe,
so a process that cannot start is an error at once, not a replica that
silently died.

A process is identified by its pid and its start time (``/proc/<pid>/stat``),
so a pid reused by another process after a restart is never mistaken for
it. Everything here blocks or runs subprocesses: call the blocking helpers
in a worker thread.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

#: Forks the command into its own session, reports ``exec`` failures.
_LAUNCHER = r"""
import os, sys
log, cwd, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.close(r)
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(cwd)
        os.execvp(argv[0], argv)
    except BaseException as exc:
        os.write(w, f"cannot start {argv[0]!r}: {exc.strerror or exc}".encode()
                 if isinstance(exc, OSError) else repr(exc).encode())
    os._exit(127)
os.close(w)
error = os.read(r, 4096)
if error:
    os.waitpid(pid, 0)
    sys.stderr.write(error.decode(errors="replace"))
    sys.exit(1)
print(pid, flush=True)
"""


class SpawnError(Exception):
    """The process could not be started; the message says why."""


@dataclass(frozen=True)
class DetachedProcess:
    """A process that outlives the daemon: its pid and start time (clock
    ticks since boot, from ``/proc/<pid>/stat``; 0 when unknown)."""

    pid: int
    start_time: int


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot), None when there
    is no such process or it is a zombie. Blocking (reads /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after it
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_running(process: DetachedProcess) -> bool:
    """Whether the process still runs (not a zombie, not another process
    that got its pid). Blocking (reads /proc)."""
    started = start_time(process.pid)
    return started is not None and (process.start_time in (0, started))


async def spawn_detached(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path
) -> DetachedProcess:
    """Start ``argv`` in a session of its own, adopted by init, with its
    output appended to ``log``; return once it runs (or raise
    :class:`SpawnError` with the reason it could not be started).

    Cancellation: the launcher is quick; if cancelled while it runs, the
    process may still start (it is found again by whatever records its pid
    afterwards, or not at all): callers record the pid right after.
    """
    if not argv:
        raise SpawnError("no command to start")
    result = await trio.run_process(
        [sys.executable, "-I", "-c", _LAUNCHER, str(log), str(cwd), *argv],
        env=dict(env),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip()
        raise SpawnError(why or f"the launcher exited with {result.returncode}")
    pid = int(result.stdout.split()[0])
    started = await trio.to_thread.run_sync(start_time, pid)
    return DetachedProcess(pid, started or 0)


def _signal_group(process: DetachedProcess, signum: int) -> None:
    """Signal the process's session (its group: it is the leader), if it
    is still the process we started."""
    if not is_running(process):
        return
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(process.pid, signum)


async def stop_detached(process: DetachedProcess, grace: float, poll: float = 0.02) -> None:
    """SIGTERM the process's group, wait up to ``grace`` seconds for the
    process to end, then SIGKILL the group. Returns once it is gone.

    Cancellation: shield it (the daemon does) or the process may be left
    running after SIGTERM.
    """
    await trio.to_thread.run_sync(_signal_group, process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while await trio.to_thread.run_sync(is_running, process):
        if time.monotonic() >= deadline:
            await trio.to_thread.run_sync(_signal_group, process, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while await trio.to_thread.run_sync(is_running, process):
                if time.monotonic() >= deadline:
                    return
                await trio.sleep(poll)
            return
        await trio.sleep(poll)
