"""Start a stage's process from the trio loop, and wait for its end there.

``trio.lowlevel.open_process`` runs ``subprocess.Popen`` in a worker thread.
For a stage that hand-off, there and back, cost the loop about 1.1 ms of
the 1.6 ms a start took (the woken thread and the loop pass the GIL to and
fro), where ``Popen`` itself takes about 0.2 ms.

So :func:`start_process` calls ``Popen`` on the loop when CPython starts the
process with ``vfork``: no ``preexec_fn`` and no change of user, group or
groups. The loop is then suspended only until the child has called
``exec`` (or failed to): a time that grows with neither the daemon's memory
nor the input. A process started as another user (a stage user) needs a
``fork``, which copies the daemon's page tables; that ``Popen`` still runs
in a worker thread.

:class:`StageProcess` waits for the end through a pidfd the loop polls
(``pidfd_open``, Linux 5.3), as ``trio.Process`` does; where the kernel
has none, a worker thread waits.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence

import trio

from conveyor.daemon.executors.base import StageUser


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # an old kernel or sandbox: wait in a thread
        return None


def _wait_exited(pid: int) -> None:
    """Block until ``pid`` has exited, leaving it to be reaped."""
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


class StageProcess:
    """A started process: its ``pid``, its ``returncode`` (None while it
    runs; negative: killed by that signal) and :meth:`wait`. One task waits
    at a time."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._pidfd = _pidfd(popen.pid)

    @property
    def returncode(self) -> int | None:
        code = self._popen.poll()
        if code is not None:
            self._close_pidfd()
        return code

    async def wait(self) -> int:
        """The exit code, once the process has ended (cancellable)."""
        if self._popen.poll() is None:
            if self._pidfd is not None:
                with contextlib.suppress(trio.ClosedResourceError):
                    await trio.lowlevel.wait_readable(self._pidfd)
            else:
                await trio.to_thread.run_sync(_wait_exited, self.pid, abandon_on_cancel=True)
            self._popen.wait()  # it has ended: reaping it does not block
        self._close_pidfd()
        assert self._popen.returncode is not None
        return self._popen.returncode

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


async def start_process(
    argv: Sequence[str],
    *,
    executable: str,
    cwd: str,
    env: Mapping[str, str],
    output: int,
    umask: int,
    user: StageUser | None,
) -> StageProcess:
    """Start ``argv`` in a new session, with stdin from ``/dev/null`` and
    stdout and stderr to the file descriptor ``output``. Raises ``OSError``
    when it cannot start (no such program, no such folder, ...)."""

    def popen(as_user: StageUser | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            executable=executable,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            umask=umask,
            user=as_user.uid if as_user else None,
            group=as_user.gid if as_user else None,
            extra_groups=[] if as_user else None,
        )

    if user is None:
        return StageProcess(popen(None))
    return StageProcess(await trio.to_thread.run_sync(popen, user))
