"""A SQLite database used from trio without blocking the loop.

Every statement runs in a worker thread. Writes go through one connection and
a capacity limiter of one, so transactions never interleave; reads use one
connection per worker thread (WAL lets them run beside the writer).
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
    """Owns the SQLite connections of one database file.

    Resource handling: call :meth:`close` when done; it waits for nothing, so
    call it after the tasks using the database have finished.
    """

    def __init__(self, path: Path, *, readers: int = 4) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(path)
        migrate(self._writer)
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(readers)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

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
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._writer.close()
