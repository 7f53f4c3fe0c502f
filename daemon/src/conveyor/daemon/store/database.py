"""A SQLite database used from trio without blocking the loop.

Every statement runs in a worker thread. Writes go through one connection and
a capacity limiter of one, so transactions never interleave; writes asked for
while another is being committed are committed together, in one transaction
(a savepoint each, so one that fails leaves the others alone), by whichever
of their callers gets the connection first (group commit): a write still
returns only once its own transaction is committed. Reads use a
fixed pool of connections, as many as the read limiter lets run at once
(WAL lets them run beside the writer): a read checks one out for its
transaction and puts it back, whichever worker thread runs it, so the number
of connections and file descriptors never grows while trio retires idle
threads and starts new ones.

A full disk: a write that fails for lack of space raises, except a write
made with ``hold=True`` (the run and stage state the scheduler records),
which waits and tries again until space is freed (or
:meth:`Database.release_held_writes` gives up on it). Opening needs no free
space either: when SQLite cannot make its shared-memory index (``-shm``)
beside the database, the database is opened with a single connection in
exclusive locking mode, whose index lives in memory, and is opened as usual
again once a write succeeds with space to spare.
"""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import trio

from conveyor.daemon.store.schema import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Reads that may run at once, and so reader connections.
DEFAULT_READERS = 4
#: Seconds between the tries of a held write: the first wait, and the longest.
HOLD_FIRST_DELAY = 0.05
HOLD_MAX_DELAY = 2.0
#: Seconds after a failed attempt to leave exclusive mode before the next one.
REOPEN_INTERVAL = 5.0
#: Free bytes needed before trying to (``-shm`` and WAL growth).
REOPEN_MIN_FREE = 1 << 20

_SQLITE_IOERR = 10
_SQLITE_FULL = 13
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error grouped in it, or its cause) says the
    disk is full: ``ENOSPC``/``EDQUOT``, or SQLite's "database or disk is
    full" and the I/O errors it reports when it cannot grow a file."""
    if isinstance(exc, BaseExceptionGroup):
        return any(out_of_space(inner) for inner in exc.exceptions)
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS:
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        return code in (_SQLITE_FULL, _SQLITE_IOERR)
    cause = exc.__cause__
    return cause is not None and out_of_space(cause)


def _connect(path: Path, *, exclusive: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        if exclusive:
            # Before the first access: the WAL index then lives in this
            # connection's memory, so no -shm file needs to be made.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode loses nothing on a process crash (SIGKILL); only a
        # power loss can roll back the last transactions.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
    except BaseException:
        conn.close()
        raise
    return conn


class _Pending(Generic[T]):
    """A write waiting to be committed, then its outcome."""

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn
        #: Taken into a batch: it will be committed (or fail), whatever happens.
        self.taken = False
        #: Its outcome is known: committed (result), or failed (error).
        self.settled = False
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = trio.Event()
        self._token = trio.lowlevel.current_trio_token()

    def finish(self) -> None:
        """From the worker thread: the outcome is known."""
        self._token.run_sync_soon(self.done.set)

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class Database:
    """Owns the SQLite connections of one database file: one writer and
    ``readers`` reader connections, all opened here (blocking: construct it
    in a thread).

    When the disk is too full to open them (SQLite's ``-shm`` file cannot be
    made), the database opens in *exclusive mode* instead: one connection,
    holding SQLite's exclusive lock, serves reads and writes one at a time;
    other processes cannot read the file meanwhile. After a successful write
    with at least :data:`REOPEN_MIN_FREE` bytes free, it opens the usual
    connections again. A schema migration on a full disk raises the SQLite
    error.

    Resource handling: call :meth:`close` when done; it waits for nothing, so
    call it after the tasks using the database have finished.
    """

    def __init__(self, path: Path, *, readers: int = DEFAULT_READERS) -> None:
        if readers < 1:
            raise ValueError(f"readers must be at least 1, got {readers}")
        self.path = path
        self._reader_count = readers
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_limiter = trio.CapacityLimiter(1)
        #: Writes waiting to be committed, and who commits the next batch.
        self._pending: list[_Pending[Any]] = []
        self._batching = trio.Lock()
        self._read_limiter = trio.CapacityLimiter(readers)
        self._shrinking = trio.Lock()
        self._idle_lock = threading.Lock()
        self._released = trio.Event()
        self._next_reopen = 0.0
        self.exclusive = False
        try:
            self._open_shared()
        except sqlite3.Error as exc:
            if not out_of_space(exc):
                raise
            log.warning(
                "the disk holding %s is full (%s): the database is open in exclusive mode,"
                " one connection for reads and writes, until space is freed",
                path,
                exc,
            )
            self._open_exclusive()
        migrate(self._writer)

    def _open_shared(self) -> None:
        """The usual connections: one writer, the reader pool."""
        opened: list[sqlite3.Connection] = []
        try:
            for _ in range(1 + self._reader_count):
                opened.append(_connect(self.path))
        except BaseException:
            for conn in opened:
                conn.close()
            raise
        self._writer = opened[0]
        #: Reader connections not in use. The read limiter admits at most
        #: ``readers`` reads at once, so a read always finds one here.
        self._readers = opened[1:]
        self._idle = list(self._readers)
        self.exclusive = False

    def _open_exclusive(self) -> None:
        """One connection in exclusive locking mode, for reads and writes."""
        self._writer = _connect(self.path, exclusive=True)
        self._readers = [self._writer]
        self._idle = [self._writer]
        self.exclusive = True

    @property
    def connections(self) -> int:
        """Open connections: the writer and the readers."""
        return len({id(conn) for conn in [self._writer, *self._readers]})

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, hold: bool = False) -> T:
        """Run ``fn(conn)`` in one transaction, committed before returning.

        With ``hold``, a transaction that fails because the disk is full
        (:func:`out_of_space`) is rolled back and tried again, with pauses
        growing to :data:`HOLD_MAX_DELAY` s, until it commits: the caller
        waits until space is freed, or until :meth:`release_held_writes` is
        called (then the error is raised). ``fn`` may run more than once.
        Without ``hold``, the error is raised at once.

        Cancellation: a held write that is cancelled between two tries
        raises ``trio.Cancelled`` (nothing was written); a transaction
        itself is never abandoned half-way.
        """
        delay = HOLD_FIRST_DELAY
        waiting_since = 0.0
        while True:
            try:
                result = await self._commit(fn)
            except sqlite3.Error as exc:
                if not hold or self._released.is_set() or not out_of_space(exc):
                    raise
                if not waiting_since:
                    waiting_since = time.monotonic()
                    log.warning(
                        "cannot write to %s (%s): waiting for free space to record it",
                        self.path,
                        exc,
                    )
            else:
                if waiting_since:
                    log.warning(
                        "wrote to %s after waiting %.1fs for free space",
                        self.path,
                        time.monotonic() - waiting_since,
                    )
                if self.exclusive and time.monotonic() >= self._next_reopen:
                    with trio.CancelScope(shield=True):  # the write is done: return it
                        await trio.to_thread.run_sync(self._reopen, limiter=self._write_limiter)
                return result
            with trio.move_on_after(delay):
                await self._released.wait()
            delay = min(delay * 2, HOLD_MAX_DELAY)

    async def _commit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Commit ``fn`` with the writes waiting when the connection frees up
        (see the module docstring); returns its result or raises its error.

        Cancellation: a write not yet taken into a transaction is dropped
        (nothing written) and Cancelled raised; one taken is waited for
        (shielded) and returned, as a worker thread is never abandoned.
        """
        item = _Pending(fn)
        self._pending.append(item)
        try:
            async with self._batching:
                if not item.taken:
                    batch, self._pending = self._pending, []
                    for pending in batch:
                        pending.taken = True
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(
                            self._transactions, batch, limiter=self._write_limiter
                        )
        except trio.Cancelled:
            if not item.taken:
                self._pending.remove(item)
                raise
            with trio.CancelScope(shield=True):
                await item.done.wait()
        return item.outcome()

    def release_held_writes(self) -> None:
        """Stop holding writes for space (on shutdown): held writes, and
        those made from now on, raise their error instead."""
        self._released.set()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader connection (a consistent snapshot)."""
        limiter = self._write_limiter if self.exclusive else self._read_limiter
        return await trio.to_thread.run_sync(self._read, fn, limiter=limiter)

    async def shrink_memory(self) -> None:
        """Empty the connections' page caches (``PRAGMA shrink_memory``),
        for when the daemon is idle: reads and writes wait meanwhile (it
        takes every reader and the writer), so no connection is in use."""
        borrowers: list[object] = []
        # one at a time: two taking readers each would wait for the other's
        async with self._shrinking:
            try:
                if not self.exclusive:
                    for _ in range(self._reader_count):
                        borrower = object()
                        await self._read_limiter.acquire_on_behalf_of(borrower)
                        borrowers.append(borrower)
                await trio.to_thread.run_sync(self._shrink, limiter=self._write_limiter)
            finally:
                for borrower in borrowers:
                    self._read_limiter.release_on_behalf_of(borrower)

    def _shrink(self) -> None:
        for conn in {id(c): c for c in [*self._readers, self._writer]}.values():
            conn.execute("PRAGMA shrink_memory")

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking variant of :meth:`write` (without holding), for start-up
        before the loop serves."""
        return self._transaction(fn)

    def _transactions(self, batch: list[_Pending[Any]]) -> None:
        """Commit ``batch`` (blocking): one transaction for all, a savepoint
        for each when there are several. A write whose error took the whole
        transaction with it (SQLite rolls back on some errors, a full disk
        at COMMIT) fails the writes run before it in it too; those after it
        get a transaction of their own."""
        try:
            if len(batch) == 1:
                item = batch[0]
                try:
                    item.result = self._transaction(item.fn)
                except BaseException as exc:
                    item.error = exc
                item.settled = True
                return
            conn = self._writer
            rest = list(batch)
            while rest:
                done: list[_Pending[Any]] = []
                conn.execute("BEGIN IMMEDIATE")
                while rest:
                    item = rest.pop(0)
                    done.append(item)
                    conn.execute("SAVEPOINT write")
                    try:
                        item.result = item.fn(conn)
                    except BaseException as exc:
                        item.error = exc
                        if not conn.in_transaction:  # SQLite rolled everything back
                            for earlier in done:
                                earlier.error = earlier.error or exc
                                earlier.settled = True
                            done = []
                            break
                        conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
                if not done:
                    continue
                try:
                    conn.execute("COMMIT")
                except BaseException as exc:
                    if conn.in_transaction:
                        self._rollback(conn)
                    for item in done:
                        item.error = item.error or exc
                for item in done:
                    item.settled = True
        except BaseException as exc:  # a transaction could not begin or end
            if self._writer.in_transaction:
                self._rollback(self._writer)
            for item in batch:
                if not item.settled:
                    item.error, item.settled = exc, True
            raise
        finally:
            for item in batch:
                item.finish()

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("rollback failed on %s", self.path)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk at COMMIT).
            if conn.in_transaction:
                self._rollback(conn)
            raise
        return result

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._idle_lock:
            conn = self._idle.pop()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        finally:
            with self._idle_lock:
                self._idle.append(conn)

    def _reopen(self) -> None:
        """Leave exclusive mode if the disk now has room for the usual
        connections (blocking; run with the write limiter, which in
        exclusive mode every read holds too, so nothing uses the
        connection)."""
        if not self.exclusive or shutil.disk_usage(self.path.parent).free < REOPEN_MIN_FREE:
            return
        self._writer.close()
        try:
            self._open_shared()
        except sqlite3.Error as exc:
            if not out_of_space(exc):
                log.exception("cannot reopen %s; staying in exclusive mode", self.path)
            self._open_exclusive()
            self._next_reopen = time.monotonic() + REOPEN_INTERVAL
            return
        log.warning("%s has room again: the database left exclusive mode", self.path)

    def close(self) -> None:
        for conn in {id(c): c for c in [*self._readers, self._writer]}.values():
            conn.close()
        self._readers = self._idle = []
