"""Run a command in its own process group, pumping its output into a log.

The output pipe is drained by a worker thread that writes straight to the
log file, so the trio loop never blocks on disk and memory stays bounded
whatever the process writes. When the process ends, or the caller is
cancelled, the whole process group is stopped: SIGTERM, a grace period, then
SIGKILL, so grandchildren that ignore SIGTERM do not outlive their stage.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from conveyor.daemon.executors.base import ExecutorError, ProcessRequest
from conveyor.daemon.logstore import CHUNK, StageLog

#: One pump thread per running process; kept apart from trio's default limiter
#: so blocked pumps never starve database or file work.
PUMP_LIMITER_SIZE = 1024
_pump_limiter: trio.CapacityLimiter | None = None

#: Marker put in every stage process's environment, so that a restarted
#: daemon can find and stop processes its previous life left behind.
STAGE_MARKER = "CONVEYOR_STAGE_PROCESS"


def _limiter() -> trio.CapacityLimiter:
    global _pump_limiter
    if _pump_limiter is None:
        _pump_limiter = trio.CapacityLimiter(PUMP_LIMITER_SIZE)
    return _pump_limiter


def _pump(
    rfd: int,
    log_fd: int,
    on_data: Callable[[int], None],
    stop: threading.Event,
) -> None:
    poller = select.poll()
    poller.register(rfd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        # Once the process group is gone, drain what is buffered and stop,
        # even if an escaped descendant still holds the pipe open.
        if not poller.poll(0 if stop.is_set() else 200):
            if stop.is_set():
                return
            continue
        data = os.read(rfd, CHUNK)
        if not data:
            return
        view = memoryview(data)
        while view:
            view = view[os.write(log_fd, view) :]
        on_data(len(data))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _stop_group(proc: trio.Process, pgid: int, grace: float) -> None:
    """SIGTERM the group, wait up to ``grace`` for it to go, then SIGKILL."""
    if proc.returncode is None or _group_alive(pgid):
        _signal_group(pgid, signal.SIGTERM)
        with trio.move_on_after(grace):
            await proc.wait()
            # No event tells when a process group empties: poll briefly.
            while _group_alive(pgid):  # noqa: ASYNC110
                await trio.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    await proc.wait()


async def run_in_process_group(
    request: ProcessRequest,
    log: StageLog,
    *,
    on_started: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """Run ``request`` to completion; return its exit code.

    Cancellation: on cancellation the process group gets SIGTERM, then
    SIGKILL after ``request.kill_grace`` seconds (shielded, so the group is
    always stopped), and Cancelled is re-raised.

    Resource handling: after the main process exits, anything left in its
    process group is killed; the pump thread and pipe are always closed.

    Error handling: a command that cannot be started raises
    :class:`ExecutorError` with the reason.
    """
    token = trio.lowlevel.current_trio_token()
    log_fd = await trio.to_thread.run_sync(log.open_append)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            proc = await trio.lowlevel.open_process(
                request.argv,
                cwd=str(request.cwd),
                env=request.env,
                stdin=subprocess.DEVNULL,
                stdout=wfd,
                stderr=wfd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutorError(f"cannot start {request.argv[0]!r}: {exc.strerror or exc}") from exc
        finally:
            os.close(wfd)
        pgid = proc.pid
        stop = threading.Event()

        def on_data(nbytes: int) -> None:
            token.run_sync_soon(log.advance, nbytes)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run_pump, rfd, log_fd, on_data, stop)
            try:
                if on_started is not None:
                    await on_started(pgid)
                await proc.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await _stop_group(proc, pgid, request.kill_grace)
                    stop.set()
        assert proc.returncode is not None
        return proc.returncode
    finally:
        os.close(rfd)
        os.close(log_fd)


async def _run_pump(
    rfd: int, log_fd: int, on_data: Callable[[int], None], stop: threading.Event
) -> None:
    await trio.to_thread.run_sync(_pump, rfd, log_fd, on_data, stop, limiter=_limiter())


def kill_leftover_processes(pgids: list[int]) -> int:
    """Kill processes of the given groups that carry the stage marker.

    Used at start-up for stages a killed daemon left running. Checks the
    marker so a recycled process group id of an unrelated process is left
    alone. Returns how many processes were signalled. Blocking (reads /proc).
    """
    wanted = set(pgids)
    killed = 0
    if not wanted:
        return 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            pgrp = int(stat.rsplit(")", 1)[1].split()[2])
            if pgrp not in wanted:
                continue
            if f"{STAGE_MARKER}=1".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
        except (OSError, ValueError, IndexError):
            continue
    return killed
