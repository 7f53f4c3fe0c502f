"""A SQLite database used from trio without blocking the loop.

Every statement runs in a worker thread. Writes go through one connection and
a capacity limiter of one, so transactions never interleave. Reads use a
fixed pool of connections, as many as the read limiter lets run at once
(WAL lets them run beside the writer): a read checks one out for its
transaction and puts it back, whichever worker thread runs it, so the number
of connections and file descriptors never grows while trio retires idle
threads and starts new ones.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from conveyor.daemon.store.schema import migrate

T = TypeVar("T")

#: Reads that may run at once, and so reader connections.
DEFAULT_READERS = 4


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode loses nothing on a process crash (SIGKILL); only a
    # power loss can roll back the last transactions.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class Database:
    """Owns the SQLite connections of one database file: one writer and
    ``readers`` reader connections, all opened here (blocking: construct it
    in a thread).

    Resource handling: call :meth:`close` when done; it waits for nothing, so
    call it after the tasks using the database have finished.
    """

    def __init__(self, path: Path, *, readers: int = DEFAULT_READERS) -> None:
        if readers < 1:
            raise ValueError(f"readers must be at least 1, got {readers}")
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(path)
        migrate(self._writer)
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(readers)
        #: Reader connections not in use. The read limiter admits at most
        #: ``readers`` reads at once, so a read always finds one here.
        self._idle: list[sqlite3.Connection] = [_connect(path) for _ in range(readers)]
        self._readers = list(self._idle)
        self._idle_lock = threading.Lock()

    @property
    def connections(self) -> int:
        """Open connections: the writer and the readers."""
        return 1 + len(self._readers)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction, committed before returning."""
        return await trio.to_thread.run_sync(self._transaction, fn, limiter=self._write_limiter)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader connection (a consistent snapshot)."""
        return await trio.to_thread.run_sync(self._read, fn, limiter=self._read_limiter)

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking variant of :meth:`write`, for start-up before the loop serves."""
        return self._transaction(fn)

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
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

    def close(self) -> None:
        for conn in self._readers:
            conn.close()
        self._readers = self._idle = []
        self._writer.close()
