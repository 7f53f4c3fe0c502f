"""Run a command in its own process group, its output going into a log.

A stage's own log is the process's stdout and stderr: the process writes
to the file itself, so no daemon thread copies its output, and followers
learn of it from the file's size (see
:class:`~conveyor.daemon.executors.base.LogFile`). Output that the daemon
must see first (masked for secrets) goes through a pipe, drained by the
daemon's log pump, one thread for every stage's pipe, that writes to the
log file (through an :class:`~conveyor.daemon.executors.base.OutputWriter`,
see :mod:`~conveyor.daemon.executors.pump`). Either way the trio loop never
copies output and memory stays bounded whatever the process writes. When
the process ends, or the caller is cancelled, the whole process group is
stopped: SIGTERM, a grace period, then SIGKILL, so grandchildren that
ignore SIGTERM do not outlive their stage. The process is started and
waited for on the trio loop, without a worker thread (see
:mod:`~conveyor.daemon.executors.spawn`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import time
from pathlib import Path

import trio

from conveyor.daemon.executors.base import ExecutorError, LogOutput, ProcessRequest, StageOutput
from conveyor.daemon.executors.pump import output_pump
from conveyor.daemon.executors.spawn import StageProcess, start_process

#: Threads scanning /proc for what is left of stopped process groups.
SCAN_LIMITER_SIZE = 4
_scan_limiter: trio.CapacityLimiter | None = None
#: Seconds between /proc scans while waiting for a stopped group to empty.
GROUP_POLL_INTERVAL = 0.05
#: How long a SIGKILLed process group may take to go before the stage ends anyway.
KILL_WAIT = 5.0

#: Put in every stage process's environment, set to :func:`stage_marker` of
#: the daemon's home, so a restarted daemon can find and stop processes its
#: previous life left behind.
STAGE_MARKER = "CONVEYOR_STAGE_PROCESS"


@functools.cache
def stage_marker(home: Path) -> str:
    """The value of :data:`STAGE_MARKER` for the daemon whose home is
    ``home``: the home's resolved path, so a daemon started through a
    symlink and one started by the real path mark their stages alike.
    Blocking the first time for a home (it resolves symlinks)."""
    return str(home.resolve())


#: The umask of stage processes: files they make are readable by others
#: (the daemon's own umask is 077).
STAGE_UMASK = 0o022


def _scans() -> trio.CapacityLimiter:
    global _scan_limiter
    if _scan_limiter is None:
        _scan_limiter = trio.CapacityLimiter(SCAN_LIMITER_SIZE)
    return _scan_limiter


def _group_exists(pgid: int) -> bool:
    """Whether the kernel still knows the group, zombies included: one signal."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies waiting for a
    slow init to reap them do not count). Blocking (reads /proc)."""
    if not _group_exists(pgid):
        return False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    """Poll /proc until no process of the group runs, for at most
    ``timeout`` seconds; True when the group is gone. Blocking."""
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(GROUP_POLL_INTERVAL, remaining))
    return True


async def _group_left(pgid: int) -> bool:
    """Whether anything of the group is left. One signal answers for the
    usual case (nothing left); only a group that still has members, maybe
    zombies, costs a /proc scan, in a worker thread."""
    if not _group_exists(pgid):
        return False
    return await trio.to_thread.run_sync(_group_alive, pgid, limiter=_scans())


async def _stop_group(proc: StageProcess, pgid: int, grace: float) -> None:
    """SIGTERM the group, wait up to ``grace`` for it to go, then SIGKILL."""
    if proc.returncode is None or await _group_left(pgid):
        _signal_group(pgid, signal.SIGTERM)
        deadline = trio.current_time() + grace
        with trio.move_on_at(deadline):
            await proc.wait()
            # No event tells when a process group empties: a worker thread
            # polls /proc, for no longer than the grace period.
            remaining = deadline - trio.current_time()
            await trio.to_thread.run_sync(_wait_group_gone, pgid, remaining, limiter=_scans())
    _signal_group(pgid, signal.SIGKILL)
    await proc.wait()
    # SIGKILL is sent, not yet acted on (a busy machine may take a while to
    # schedule the victims): the stage ends once its processes are gone.
    if await _group_left(pgid):
        await trio.to_thread.run_sync(_wait_group_gone, pgid, KILL_WAIT, limiter=_scans())


async def run_in_process_group(request: ProcessRequest, output: StageOutput) -> int:
    """Run ``request`` to completion; return its exit code.

    Output: a stage's own log (a :class:`LogOutput`) is the process's stdout
    and stderr, written by the process itself (see :class:`LogFile`); any
    other output (a masked one) gets a pipe, which the daemon's log pump
    copies into it.

    Cancellation: on cancellation the process group gets SIGTERM, then
    SIGKILL after ``request.kill_grace`` seconds (shielded, so the group is
    always stopped), and Cancelled is re-raised.

    Resource handling: after the main process exits, anything left in its
    process group is killed; the pipe is always let go of by the pump and
    closed, the log file always let go of.

    Identity: with ``request.user``, the process runs as that user, with
    its primary group only (no supplementary groups) and, since it is not
    root, no capabilities; the daemon must be root to do this. Stage
    processes get the umask :data:`STAGE_UMASK`, whatever the daemon's.

    Error handling: a command that cannot be started raises
    :class:`ExecutorError` with the reason. Output that cannot be written to
    the stage log (a full disk: ``ENOSPC``) raises that ``OSError``, so the
    stage fails with the reason: through a pipe, the group is stopped at
    once, as a cancellation would; written by the process itself, the
    process sees the error, and the output fails when the process ends on a
    full disk. Output is never dropped silently.
    """
    if not isinstance(output, LogOutput):
        return await _run_piped(request, output)
    log_file = output.open_file()
    try:
        proc = await _start(request, log_file.fd)
        code = await _wait_then_stop(proc, request, trio.CancelScope())
    except BaseException:
        log_file.close(check=False)
        raise
    log_file.close(root=request.user is None and os.geteuid() == 0)
    return code


async def _run_piped(request: ProcessRequest, output: StageOutput) -> int:
    """:func:`run_in_process_group` with the output through a pipe and the pump."""
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            proc = await _start(request, wfd)
        finally:
            os.close(wfd)
        pump = output_pump()
        waiting = trio.CancelScope()
        feed = pump.start(rfd, output, waiting)
        try:
            code = await _wait_then_stop(proc, request, waiting)
        finally:
            with trio.CancelScope(shield=True):
                # Once the process group is gone, copy what the pipe holds and
                # stop, even if an escaped descendant still holds it open.
                pump.finish(feed)
                await feed.done.wait()
        if feed.error is not None:
            raise feed.error
        return code
    finally:
        os.close(rfd)


async def _start(request: ProcessRequest, output_fd: int) -> StageProcess:
    """Start ``request`` with ``output_fd`` as its stdout and stderr."""
    try:
        return await start_process(
            request.argv,
            # as another user, the PATH search is that user's to make
            executable=request.argv[0]
            if request.user is not None
            else resolved_program(request.argv[0], request.env),
            cwd=str(request.cwd),
            env=request.env,
            output=output_fd,
            umask=STAGE_UMASK,
            user=request.user,
        )
    except OSError as exc:
        raise ExecutorError(f"cannot start {request.argv[0]!r}: {exc.strerror or exc}") from exc


async def _wait_then_stop(
    proc: StageProcess, request: ProcessRequest, waiting: trio.CancelScope
) -> int:
    """Wait for ``proc`` to end (within ``waiting``, which its output may
    cancel), then stop its group, shielded; its exit code."""
    try:
        with waiting:
            await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            await _stop_group(proc, proc.pid, request.kill_grace)
    assert proc.returncode is not None
    return proc.returncode


#: Programs found on a PATH, by (name, PATH): see :func:`resolved_program`.
_programs: dict[tuple[str, str], str] = {}


def resolved_program(name: str, env: dict[str, str]) -> str:
    """``name`` as the path the process's ``PATH`` (in ``env``) finds it at,
    so starting it tries no other folder; ``name`` itself when it has a
    slash or is not found (starting it then fails as it would have).

    Found paths are remembered, and checked again (one ``access`` call)
    before each use."""
    if "/" in name:
        return name
    path = env.get("PATH", os.defpath)
    key = (name, path)
    known = _programs.get(key)
    if known is not None and os.access(known, os.X_OK):
        return known
    found = shutil.which(name, path=path)
    if found is None or not os.path.isabs(found):
        _programs.pop(key, None)
        return name
    if len(_programs) > 1024:
        _programs.clear()
    _programs[key] = found
    return found


def kill_leftover_processes(marker: str) -> int:
    """Kill processes whose environment carries ``STAGE_MARKER=marker``.

    Stage processes get the daemon's home folder (:func:`stage_marker`) as
    their marker, so a restarted daemon finds and stops whatever its killed
    predecessor's stages left running, and nothing else. Returns how many processes were signalled.
    Blocking (reads /proc).
    """
    needle = f"{STAGE_MARKER}={marker}".encode()
    own = os.getpid()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
        except (OSError, ValueError):
            continue
    return killed
