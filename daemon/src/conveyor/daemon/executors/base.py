"""The executor contract that stage kinds use to run processes, and where a
stage's output goes (:class:`StageOutput`)."""

from __future__ import annotations

import errno
import os
import threading
import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Final, Protocol

import trio

from conveyor.daemon.logstore import StageLog
from conveyor.daemon.secrets.masking import Masker, StreamMasker


class ExecutorError(Exception):
    """A process could not be started (missing program, bad workspace...)."""


@dataclass(frozen=True)
class StageUser:
    """The unprivileged account stage processes run as (setting
    ``stage_user``, when the daemon runs as root)."""

    name: str
    uid: int
    gid: int


class ProcessKilled(Exception):
    """The process was ended by what it ran in, not by its own doing: a
    container killed for exceeding its memory limit, a node that went down
    mid-stage. Raised by an executor instead of returning an exit code; the
    stage attempt fails with :attr:`reason` (and is retried per its
    ``retries``)."""

    def __init__(
        self,
        reason: str,
        *,
        exit_code: int | None = None,
        error_type: str = "killed",
        system_error: bool = False,
    ) -> None:
        super().__init__(reason)
        #: Why, for the stage's reason: ``killed: out of memory (limit 64m)``.
        self.reason = reason
        self.exit_code = exit_code
        #: A short, low-cardinality class for telemetry (``out_of_memory``).
        self.error_type = error_type
        #: True when the machinery failed (a node went down), not the stage.
        self.system_error = system_error


#: Where container executors mount the run's workspace; the working
#: directory of a stage's processes in a container (and its
#: ``CONVEYOR_WORKSPACE``).
CONTAINER_WORKSPACE: Final = "/workspace"
#: Labels on every container and service a container executor makes: the
#: run, the stage, and the daemon (its id, :attr:`ContainerSpec.daemon`),
#: which is how a restarted daemon finds and removes what its interrupted
#: runs left behind (``Executor.cleanup``).
LABEL_RUN: Final = "conveyor.run"
LABEL_STAGE: Final = "conveyor.stage"
LABEL_DAEMON: Final = "conveyor.daemon"

_SIZE_UNITS: Final = (("t", 1 << 40), ("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10))


def format_size(nbytes: int) -> str:
    """A byte count as a pipeline file writes it: ``64m``, ``1g``,
    ``1536k``, else the plain number of bytes."""
    for suffix, unit in _SIZE_UNITS:
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)


@dataclass(frozen=True)
class ContainerSpec:
    """Where a stage's processes run when its executor runs containers
    (``executor: docker`` or ``swarm``): the stage's ``image``,
    ``resources``, ``placement``, ``network`` and ``user``, resolved by the
    daemon from the pipeline file and its defaults.

    The run's workspace is mounted at :data:`CONTAINER_WORKSPACE`;
    :meth:`container_path` says where a folder of the workspace is inside.
    """

    #: The image, as the engine names it; never pulled by the ``docker``
    #: executor.
    image: str
    #: The run's workspace folder on the daemon's machine.
    workspace: Path
    #: ``uid:gid`` the processes run as (the daemon resolves the default:
    #: its stage user, its own user, or 65534:65534 when it is root).
    user: str
    #: ``none`` (loopback only) or ``host``.
    network: str = "none"
    #: CPU limit (number of CPUs, may be fractional), or None.
    cpus: float | None = None
    #: Memory limit in bytes, or None; a process killed for exceeding it
    #: makes the executor raise :class:`ProcessKilled`.
    memory: int | None = None
    #: Swarm placement constraints (``node.labels.zone == eu``).
    placement: tuple[str, ...] = ()
    #: The daemon's id, the value of :data:`LABEL_DAEMON`.
    daemon: str = ""
    #: Labels to put on what the executor makes (:data:`LABEL_RUN`,
    #: :data:`LABEL_STAGE`, :data:`LABEL_DAEMON`).
    labels: Mapping[str, str] = field(default_factory=dict)

    def container_path(self, path: Path) -> str:
        """Where ``path`` (the workspace or a folder in it, as the daemon
        sees it) is in the container. Raises ``ValueError`` for a path
        outside the workspace."""
        relative = path.relative_to(self.workspace)  # ValueError outside it
        return str(PurePosixPath(CONTAINER_WORKSPACE, relative))

    @property
    def memory_text(self) -> str:
        """The memory limit as written in a pipeline file (``64m``), or ""."""
        return format_size(self.memory) if self.memory is not None else ""


@dataclass(frozen=True)
class ProcessRequest:
    """One process of a stage: its command, folder and complete environment."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    #: Seconds between SIGTERM and SIGKILL when the process is cancelled.
    kill_grace: float = 5.0
    #: Run the process as this user, with its group only and no
    #: capabilities; None: as the daemon's user. Set by the daemon, never by
    #: a stage kind; an executor that cannot honour it must refuse to run.
    user: StageUser | None = None
    #: The container to run the process in, for executors that run
    #: containers (``container_fields``); None for the others. Set by the
    #: daemon from the stage's pipeline fields.
    container: ContainerSpec | None = None


class OutputWriter(Protocol):
    """Appends output from one worker thread (see :meth:`StageOutput.open_writer`).

    A context manager: leaving it closes the writer.
    """

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` to the stage log. Blocking: call it from the
        thread that opened the writer, never from the trio loop. Raises
        ``OSError`` when the log cannot take it (``ENOSPC``: the disk is
        full)."""
        ...

    def close(self) -> None:
        """No more writes from this writer."""
        ...

    def __enter__(self) -> OutputWriter: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class StageOutput(Protocol):
    """Where a stage's output goes: its log, which followers read live.

    From the trio loop, ``await output.write(data)``. An executor that pumps
    output in a worker thread (from a pipe, a socket, a container's stream)
    opens an :class:`OutputWriter` in that thread instead: its writes go
    straight to the log file, and followers are told in batches, whatever
    the rate of output.
    """

    async def write(self, data: bytes) -> None:
        """Append ``data`` to the stage log (from the trio loop). Raises
        ``OSError`` when the log cannot take it (``ENOSPC``: the disk is
        full)."""
        ...

    def open_writer(self) -> OutputWriter:
        """A writer for one worker thread. Blocking (it opens the log file):
        call it in the thread that writes, e.g. inside
        ``trio.to_thread.run_sync``. The output must have been made on the
        trio loop of the daemon, which it notifies."""
        ...

    @property
    def at_line_start(self) -> bool:
        """True when the log is empty or the last byte written to it (by
        any writer, in any thread) ended a line; False after a tool's
        unterminated last line."""
        ...


class Executor(Protocol):
    """Runs stage processes, sending their output (stdout and stderr merged)
    to the stage's :class:`StageOutput`.

    Cancellation: when the calling task is cancelled (stage timeout, run
    cancelled), the executor stops the process and everything it started
    (SIGTERM, then SIGKILL after ``kill_grace``) before re-raising.
    """

    name: str

    async def run(self, request: ProcessRequest, output: StageOutput) -> int:
        """Run to completion and return the exit code (negative: killed by
        that signal). The request's environment carries the stage marker
        (``CONVEYOR_STAGE_PROCESS``): keep it in every process started, so a
        restarted daemon can clean up after a crash."""
        ...

    # Optional attributes an executor may have (read with getattr):
    #
    # container_fields: Collection[str]
    #     The executor runs containers: the pipeline fields it takes among
    #     "image", "resources", "placement", "network" and "user". With
    #     "image" in it, a stage on it needs an image; every request it gets
    #     carries ``container`` (a :class:`ContainerSpec`).
    # async def cleanup(self, daemon: str, live_runs: Collection[str]) -> int
    #     Remove what the executor made for the daemon whose id is
    #     ``daemon`` (:data:`LABEL_DAEMON`) for runs not in ``live_runs``;
    #     return how many things it removed. Called at start-up, before any
    #     run starts, after a daemon that was killed left runs in flight.


def container_fields(executor: object) -> frozenset[str]:
    """The pipeline fields ``executor`` takes (its optional
    ``container_fields``); empty for an executor that runs no containers."""
    fields: Collection[str] = getattr(executor, "container_fields", ()) or ()
    return frozenset(fields)


class _LineEnd:
    """Whether the last byte written to one stage log ended a line. Written
    from the trio loop and from pump threads: guarded by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at_line_start = True

    def wrote(self, data: bytes | memoryview) -> None:
        """Record the end of ``data``, just written (nothing for no bytes)."""
        if len(data):
            ends_line = bytes(memoryview(data)[-1:]) == b"\n"
            with self._lock:
                self._at_line_start = ends_line

    @property
    def at_line_start(self) -> bool:
        with self._lock:
            return self._at_line_start


def conveyor_line(text: str, *, at_line_start: bool = True) -> bytes:
    """A line from Conveyor itself for a stage log, prefixed with a cyan
    ``[conveyor]``; with a newline first unless the log is ``at_line_start``,
    so it is never glued onto a tool's unterminated last line."""
    start = "" if at_line_start else "\n"
    return f"{start}\x1b[1;36m[conveyor]\x1b[0m {text}\n".encode()


# One state per log, shared by the outputs of all its attempts.
_line_ends: weakref.WeakKeyDictionary[StageLog, _LineEnd] = weakref.WeakKeyDictionary()
_line_ends_lock = threading.Lock()


class LogOutput:
    """The :class:`StageOutput` of a stage: its :class:`StageLog`.

    Make it on the trio loop (it remembers the loop, for writers in threads).
    Every output of the same log knows where the last line ended
    (:attr:`at_line_start`), whoever wrote last.
    """

    def __init__(self, log: StageLog) -> None:
        self._log = log
        self._token = trio.lowlevel.current_trio_token()
        with _line_ends_lock:
            self._line_end = _line_ends.setdefault(log, _LineEnd())

    async def write(self, data: bytes) -> None:
        await self._log.write(data)
        self._line_end.wrote(data)

    def open_writer(self) -> _LogWriter:
        return _LogWriter(self._log, self._token, self._line_end)

    def open_file(self) -> LogFile:
        """The log file itself, for a process to write its output to (see
        :class:`LogFile`). Call on the trio loop; raises ``OSError`` when
        the file cannot be opened."""
        return LogFile(self._log, self._line_end)

    @property
    def at_line_start(self) -> bool:
        return self._line_end.at_line_start


class LogFile:
    """A stage's log file, which a process writes its output to itself (its
    stdout and stderr are the file, opened for appending): no pipe, no
    daemon thread copies it. Followers learn of its growth from the file's
    size (see :class:`~conveyor.daemon.logstore.StageLog`).

    A process that cannot write to it (a full disk) sees the error itself,
    as any program writing to a file does; the daemon cannot know what it
    lost, so :meth:`close` fails the output when the log's file system has
    no block left, whatever the process made of the error.
    """

    def __init__(self, log: StageLog, line_end: _LineEnd) -> None:
        self._log = log
        self._line_end = line_end
        self.fd = log.open_file()

    def close(self, *, check: bool = True, root: bool = False) -> None:
        """Let go of the file once the process (and its group) ended. With
        ``check``, raise ``OSError`` (``ENOSPC``) when the file system is
        full: no block left for the process, which was ``root`` (who may
        use the blocks a file system keeps for root) or not."""
        if check:
            blocks = os.fstatvfs(self.fd)
            full = (blocks.f_bfree if root else blocks.f_bavail) == 0
        else:
            full = False
        last = self._log.close_file()
        self._line_end.wrote(last)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._log.path))


class _LogWriter:
    """Appends to the log file from a worker thread; the byte counts reach
    the trio loop in batches: at most one callback is pending at a time,
    however fast the output. Callbacks run in order, so every byte written
    is counted before the loop hears that the writing thread finished."""

    def __init__(self, log: StageLog, token: trio.lowlevel.TrioToken, line_end: _LineEnd) -> None:
        self._log = log
        self._token = token
        self._line_end = line_end
        self._lock = threading.Lock()
        self._pending = 0
        self._fd: int | None = log.open_append()

    def write(self, data: bytes | memoryview) -> None:
        if self._fd is None:
            raise ValueError("write to a closed output writer")
        view = memoryview(data)
        nbytes = 0
        try:
            while nbytes < len(view):
                nbytes += os.write(self._fd, view[nbytes:])
        finally:
            # what made it to the file before an error (a full disk) is counted
            if nbytes:
                self._line_end.wrote(view[:nbytes])
            self._count(nbytes)

    def _count(self, nbytes: int) -> None:
        with self._lock:
            first = self._pending == 0
            self._pending += nbytes
        if first and nbytes:
            self._token.run_sync_soon(self._deliver)

    def _deliver(self) -> None:  # trio thread
        with self._lock:
            nbytes, self._pending = self._pending, 0
        self._log.advance(nbytes)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> _LogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MaskedOutput:
    """A :class:`StageOutput` that masks secret values before they reach
    ``inner``: whole writes from the trio loop, and a stream per writer
    thread, so a value split across chunks is masked too (see
    :class:`~conveyor.daemon.secrets.masking.StreamMasker`)."""

    def __init__(self, inner: StageOutput, masker: Masker) -> None:
        self._inner = inner
        self._masker = masker

    async def write(self, data: bytes) -> None:
        await self._inner.write(self._masker.mask(data))

    def open_writer(self) -> OutputWriter:
        return _MaskedWriter(self._inner.open_writer(), self._masker.stream())

    @property
    def at_line_start(self) -> bool:
        return self._inner.at_line_start


class _MaskedWriter:
    """Feeds one writer thread's output through a stream masker; what it
    holds back is written when the writer closes."""

    def __init__(self, inner: OutputWriter, stream: StreamMasker) -> None:
        self._inner = inner
        self._stream = stream

    def write(self, data: bytes | memoryview) -> None:
        masked = self._stream.feed(data)
        if masked:
            self._inner.write(masked)

    def close(self) -> None:
        try:
            rest = self._stream.flush()
            if rest:
                self._inner.write(rest)
        finally:
            self._inner.close()

    def __enter__(self) -> _MaskedWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
