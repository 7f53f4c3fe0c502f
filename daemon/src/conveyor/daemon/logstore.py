"""Stage logs: append-only files addressed by byte offset.

Each stage has one file, ``<logs>/<run id>/<stage>.log``. Its writer (a
process pump or the daemon itself) appends and then calls :meth:`StageLog.advance`;
a stage process may also write to the file itself (:meth:`StageLog.open_file`),
and the file's size then says how far the log goes. Readers stream from any
offset and, when following, wait for the log to grow until the stage closes
it. Readers and writers touch the file's contents only in worker threads
(for a process writing to it itself, the loop only opens it, looks at its
size and reads its last byte) and read in bounded chunks, so a 10 MB line
or a stage that never writes a newline costs no more memory than any
other output.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import trio

CHUNK = 1 << 20
#: A follower that is nearly caught up waits up to BATCH_DELAY s for BATCH bytes.
BATCH = 64 << 10
BATCH_DELAY = 0.005
#: A follower of a log that a process writes to itself looks at the file's
#: size after POLL_FIRST s without news, then at doubling intervals up to
#: POLL_MAX s; one follower of the log looks, for all of them.
POLL_FIRST = 0.005
POLL_MAX = 0.1
#: Recently finished logs remembered with their final size, so a reader
#: that saw the stage running just before it ended still finds it closed.
RECENTLY_CLOSED = 4096


#: Reads up to this size are shared by the readers at the same offset.
SHARED_READ = BATCH


class _SharedRead:
    """One read of a log at ``offset``, done by the first reader there and
    handed to the others that come to the same offset meanwhile (followers
    of a live log all wake at its new bytes): one worker-thread hop per
    write instead of one per follower."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.done = trio.Event()
        #: What was read; None if the read failed (each reader then reads).
        self.data: bytes | None = None


class StageLog:
    """One stage's log file and the live state of its writers."""

    def __init__(self, path: Path, *, size: int = 0, closed: bool = False) -> None:
        self.path = path
        self._size = size
        self.closed = closed
        self._changed = trio.Event()
        #: The latest small read, shared by readers at its offset.
        self._shared: _SharedRead | None = None
        #: The file as the stage processes writing to it themselves hold it
        #: (see :meth:`open_file`), and how many do; None when none does.
        self._file: int | None = None
        self._file_users = 0
        #: Whether a follower is looking at the file's size for the others.
        self._polling = False

    @property
    def size(self) -> int:
        """How many bytes the log holds. While a process writes to the file
        itself, the file's size (one ``fstat``; it never shrinks here)."""
        if self._file is not None:
            self._size = max(self._size, os.fstat(self._file).st_size)
        return self._size

    def advance(self, nbytes: int) -> None:
        """Record that ``nbytes`` more are on disk; wakes followers.

        Called in the trio thread (a pump thread uses ``run_sync_soon``).
        While a process writes to the file itself, the file says the size.
        """
        if self._file is None:
            self._size += nbytes
        self._wake()

    def open_file(self) -> int:
        """Open the file for a stage process to write its output to itself
        (its stdout and stderr), read-write for :meth:`close_file`; until
        then the file's size is the log's. One ``open``, made on the trio
        loop like the process's start that follows: of a file made ahead
        (:meth:`LogStore.prepare`), or, for a run's first stages, the
        file's creation (and the run's log folder's).
        """
        if self._file is None:
            self._file = self.open_append(os.O_RDWR)
            self._wake()  # followers waiting for a write start looking at the file
        self._file_users += 1  # processes of a stage may run at once
        return self._file

    def close_file(self) -> bytes:
        """A process that had the file (:meth:`open_file`) has ended: once
        the last one has, take the file's final size, let go of it and wake
        followers. Returns the log's last byte (nothing for an empty log, or
        one cut shorter than it was), so its writer knows whether a line
        ended."""
        fd, size = self._file, self.size
        if fd is None:
            raise RuntimeError(f"{self.path} is not open for a process")
        self._file_users -= 1
        try:
            return os.pread(fd, 1, size - 1) if size else b""
        finally:
            if not self._file_users:
                self._file = None
                os.close(fd)
                self._wake()

    def close(self) -> None:
        """No more writes: followers end once they have read everything."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def open_append(self, access: int = os.O_WRONLY) -> int:
        """A file descriptor for appending (blocking: call from a thread,
        but see :meth:`open_file`)."""
        return _open_log(self.path, access)

    async def write(self, data: bytes) -> None:
        """Append a message from the daemon itself (e.g. the command banner).

        Raises ``OSError`` when the file cannot take it (``ENOSPC``: the
        disk is full); what was written before is counted.
        """
        written = 0

        def append() -> None:
            nonlocal written
            fd = self.open_append()
            try:
                view = memoryview(data)
                while written < len(view):
                    written += os.write(fd, view[written:])
            finally:
                os.close(fd)

        try:
            await trio.to_thread.run_sync(append)
        finally:
            if written:
                self.advance(written)

    async def chunks(self, offset: int, *, follow: bool) -> AsyncIterator[tuple[int, bytes]]:
        """Yield ``(offset, data)`` from ``offset`` to the end.

        With ``follow``, wait for more until the log is closed. Every byte
        written is delivered exactly once, whether the reader starts before,
        during or after the writes.
        """
        fd: int | None = None
        try:
            while True:
                changed = self._changed
                end, closed = self.size, self.closed
                if offset < end:
                    if fd is None:
                        fd = await trio.to_thread.run_sync(os.open, self.path, os.O_RDONLY)
                    data = await self._read(fd, offset, min(CHUNK, end - offset))
                    if not data:  # file shorter than recorded (truncated): stop
                        return
                    yield offset, data
                    offset += len(data)
                    continue
                if closed or not follow:
                    return
                if self._file is not None:
                    await self._look(changed)
                    continue
                await changed.wait()
                if not self.closed and self.size - offset < BATCH:
                    # Let a fast writer get ahead a little, so a follower that
                    # keeps up sends fewer, larger chunks.
                    await trio.sleep(BATCH_DELAY)
        finally:
            if fd is not None:
                os.close(fd)

    async def _look(self, changed: trio.Event) -> None:
        """Wait for ``changed`` or for the file (written by a process
        itself) to grow. One waiting follower looks at the file's size, at
        doubling intervals; the others wait for it to tell them."""
        if self._polling:
            await changed.wait()
            return
        self._polling = True
        try:
            delay = POLL_FIRST
            while not changed.is_set() and self._file is not None:
                with trio.move_on_after(delay):
                    await changed.wait()
                    return
                before = self._size
                if self.size > before:
                    self._wake()
                    return
                delay = min(delay * 2, POLL_MAX)
        finally:
            self._polling = False
            if not changed.is_set():  # cancelled: another follower takes over
                self._wake()

    async def _read(self, fd: int, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (at least one while the file
        holds them): a small read already done or under way at ``offset``
        is shared, so the result may hold more or fewer bytes than
        ``size``, never bytes not yet written."""
        shared = self._shared
        if shared is not None and shared.offset == offset:
            await shared.done.wait()
            if shared.data:
                return shared.data
        if size > SHARED_READ:
            return await trio.to_thread.run_sync(os.pread, fd, size, offset)
        shared = self._shared = _SharedRead(offset)
        try:
            shared.data = await trio.to_thread.run_sync(os.pread, fd, size, offset)
        finally:
            shared.done.set()
        return shared.data


class LogStore:
    """Finds the log of a stage, live or finished."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._live: dict[tuple[str, str], StageLog] = {}
        self._closed: OrderedDict[tuple[str, str], int] = OrderedDict()

    def path(self, run_id: str, stage: str) -> Path:
        return self.root / run_id / f"{stage}.log"

    def open_live(self, run_id: str, stage: str) -> StageLog:
        """The log a running stage writes to; :meth:`release` it when done."""
        key = (run_id, stage)
        log = self._live.get(key)
        if log is None:
            # A stage's log is created when it first runs, so a live log
            # starts empty; retries keep the same live log.
            log = self._live[key] = StageLog(self.path(run_id, stage))
        return log

    def prepare(self, run_id: str, stages: Iterable[str]) -> None:
        """Make the run's log folder and an empty log for each of ``stages``
        (a log already there is left as it is), ahead of their starts: a
        stage's process starts with its log open, and making a file is a
        journal write (0.1 to 0.4 ms on the benchmark VM) that the loop would
        otherwise wait for there. Blocking: call from a worker thread."""
        for stage in stages:
            os.close(_open_log(self.path(run_id, stage), os.O_WRONLY))

    def release(self, run_id: str, stage: str) -> None:
        key = (run_id, stage)
        log = self._live.pop(key, None)
        if log is not None:
            log.close()
            self._closed[key] = log.size
            if len(self._closed) > RECENTLY_CLOSED:
                self._closed.popitem(last=False)

    def live(self, run_id: str, stage: str) -> StageLog | None:
        return self._live.get((run_id, stage))

    async def reader(self, run_id: str, stage: str, *, finished: bool) -> StageLog:
        """The log to read: the live one, or a closed view of the file.

        For a stage that has not finished (or not started) this is the live
        log, so a follower sees the writes of the stage when it runs.
        """
        key = (run_id, stage)
        log = self._live.get(key)
        if log is not None:
            return log
        path = self.path(run_id, stage)
        if key in self._closed:
            return StageLog(path, size=self._closed[key], closed=True)
        if not finished:
            return self.open_live(run_id, stage)
        size = await trio.to_thread.run_sync(_size, path)
        return StageLog(path, size=size, closed=finished)


def _open_log(path: Path, access: int) -> int:
    """Open the log file ``path`` to append, making it (and, for a run's
    first log, the run's log folder) if need be. Blocking."""
    flags = access | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o640)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o640)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
