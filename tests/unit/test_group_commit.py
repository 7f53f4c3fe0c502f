"""Group commit in the store: writes asked for while another is committed
share one transaction, each still returning only once it is committed, and
one that fails leaves the others alone."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from conveyor.daemon.store import Database
from conveyor.daemon.store.database import out_of_space


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "conveyor.db")
    database.write_sync(lambda conn: conn.execute("CREATE TABLE t (v INTEGER UNIQUE)"))
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def batches(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each batch of writes committed."""
    sizes: list[int] = []
    commit = db._transactions

    def counting(batch: list[Any]) -> None:
        sizes.append(len(batch))
        commit(batch)

    monkeypatch.setattr(db, "_transactions", counting)
    return sizes


def _insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def fn(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        return value

    return fn


def _values(db: Database) -> Any:
    return db.read(lambda conn: [v for (v,) in conn.execute("SELECT v FROM t ORDER BY v")])


async def _with_first_write_held(
    db: Database, later: list[Callable[[sqlite3.Connection], Any]]
) -> tuple[list[Any], list[BaseException]]:
    """Start a write that waits inside its transaction, ask for ``later``
    meanwhile, then let it finish; returns the results and errors of
    ``later``, in order."""
    inside, release = threading.Event(), threading.Event()

    def held(conn: sqlite3.Connection) -> None:
        inside.set()
        release.wait(10)

    results: list[Any] = [None] * len(later)
    errors: list[BaseException] = []

    async def write(index: int, fn: Callable[[sqlite3.Connection], Any]) -> None:
        try:
            results[index] = await db.write(fn)
        except sqlite3.Error as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.write, held)
        await trio.to_thread.run_sync(inside.wait, 10)
        for index, fn in enumerate(later):
            nursery.start_soon(write, index, fn)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    return results, errors


async def test_writes_waiting_for_a_commit_share_the_next_transaction(
    db: Database, batches: list[int]
) -> None:
    results, errors = await _with_first_write_held(db, [_insert(v) for v in (1, 2, 3)])
    assert errors == [] and results == [1, 2, 3]
    assert batches == [1, 3], "one transaction for the held write, one for the three waiting"
    assert await _values(db) == [1, 2, 3]


async def test_a_failing_write_in_a_shared_transaction_leaves_the_others_alone(
    db: Database, batches: list[int]
) -> None:
    await db.write(_insert(5))
    later = [_insert(1), _insert(5), _insert(2)]  # the second breaks the UNIQUE constraint
    results, errors = await _with_first_write_held(db, later)
    assert batches[-1] == 3
    assert [type(e) for e in errors] == [sqlite3.IntegrityError]
    assert results[0] == 1 and results[2] == 2
    assert await _values(db) == [1, 2, 5]


async def test_a_full_disk_at_commit_fails_every_write_of_the_transaction(
    db: Database, batches: list[int]
) -> None:
    def limit(conn: sqlite3.Connection) -> None:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await db.write(limit)

    def big(value: int) -> Callable[[sqlite3.Connection], int]:
        def fn(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (value,))
            conn.execute("CREATE TABLE IF NOT EXISTS pad (data BLOB)")
            conn.execute("INSERT INTO pad VALUES (zeroblob(65536))")
            return value

        return fn

    _, errors = await _with_first_write_held(db, [big(1), big(2)])
    assert len(errors) == 2 and all(out_of_space(e) for e in errors), errors
    assert await _values(db) == [], "nothing of a failed transaction is kept"


async def test_a_write_cancelled_before_its_transaction_writes_nothing(db: Database) -> None:
    inside, release = threading.Event(), threading.Event()

    def held(conn: sqlite3.Connection) -> None:
        inside.set()
        release.wait(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.write, held)
        await trio.to_thread.run_sync(inside.wait, 10)
        with trio.CancelScope() as scope:
            scope.deadline = trio.current_time() + 0.05
            await db.write(_insert(7))
        assert scope.cancelled_caught
        release.set()
    await db.write(_insert(8))
    assert await _values(db) == [8]


async def test_a_write_cancelled_once_taken_into_a_transaction_waits_for_its_commit(
    db: Database,
) -> None:
    """Another caller commits it: the cancelled caller still returns only
    once that transaction is done, with its write in it."""
    first_in, first_go = threading.Event(), threading.Event()
    second_in, second_go = threading.Event(), threading.Event()

    def held(entered: threading.Event, go: threading.Event) -> Callable[[sqlite3.Connection], None]:
        def fn(conn: sqlite3.Connection) -> None:
            entered.set()
            go.wait(10)

        return fn

    returned: list[int] = []

    async def cancelled_write(scope: trio.CancelScope) -> None:
        with scope:
            returned.append(await db.write(_insert(7)))

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.write, held(first_in, first_go))
        await trio.to_thread.run_sync(first_in.wait, 10)
        # the lock is fair: the second held write takes the batch, with 7 in it
        nursery.start_soon(db.write, held(second_in, second_go))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(cancelled_write, scope)
        await trio.testing.wait_all_tasks_blocked()
        first_go.set()
        await trio.to_thread.run_sync(second_in.wait, 10)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert returned == []  # still waiting for the transaction it is in
        second_go.set()
    assert returned == [7]
    assert await _values(db) == [7]
