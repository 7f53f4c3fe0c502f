"""The store on a full disk, in-process (issue 9, item 4): a held write
waits for space and then commits, gives up when released, and a failed
transaction leaves the database usable.

SQLite answers "database or disk is full" (``SQLITE_FULL``) exactly as on
a full disk when the database reaches its ``max_page_count``: the tests
fill the database that way instead of filling a file system.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from conveyor.daemon.store import Database
from conveyor.daemon.store.database import out_of_space

BLOB = 64 * 1024


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "conveyor.db")
    database.write_sync(lambda conn: conn.execute("CREATE TABLE blobs (data BLOB)"))
    try:
        yield database
    finally:
        database.close()


async def _set_max_pages(db: Database, extra: int) -> None:
    """Let the database grow by ``extra`` pages at most (the writer's limit)."""

    def limit(conn: sqlite3.Connection) -> None:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages + extra}")

    await db.write(limit)


def _insert_blob(conn: sqlite3.Connection) -> int:
    return conn.execute("INSERT INTO blobs VALUES (zeroblob(?))", (BLOB,)).lastrowid or 0


async def test_a_write_on_a_full_database_fails_and_leaves_it_usable(db: Database) -> None:
    await _set_max_pages(db, 0)
    with pytest.raises(sqlite3.OperationalError, match="full") as err:
        await db.write(_insert_blob)
    assert out_of_space(err.value)
    await _set_max_pages(db, 1000)
    assert await db.write(_insert_blob) == 1
    assert await db.read(lambda conn: conn.execute("SELECT count(*) FROM blobs").fetchone()[0]) == 1


async def test_a_held_write_waits_for_space_then_commits(db: Database) -> None:
    await _set_max_pages(db, 0)
    done: list[int] = []

    async def held() -> None:
        done.append(await db.write(_insert_blob, hold=True))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(held)
        await trio.testing.wait_all_tasks_blocked()
        assert done == [], "the write waits"
        # reads go on meanwhile
        assert await db.read(lambda conn: conn.execute("SELECT count(*) FROM blobs").fetchone())
        await _set_max_pages(db, 1000)  # space is freed
    assert done == [1]


async def test_a_released_held_write_raises_its_error(db: Database) -> None:
    await _set_max_pages(db, 0)
    failures: list[BaseException] = []

    async def held() -> None:
        try:
            await db.write(_insert_blob, hold=True)
        except sqlite3.OperationalError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(held)
        await trio.testing.wait_all_tasks_blocked()
        db.release_held_writes()
    assert len(failures) == 1 and out_of_space(failures[0])
    with pytest.raises(sqlite3.OperationalError):  # released: no more holding
        await db.write(_insert_blob, hold=True)


async def test_only_errors_of_space_count_as_out_of_space() -> None:
    assert out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    grouped = ExceptionGroup("stage", [ValueError("x"), OSError(errno.ENOSPC, "full")])
    assert out_of_space(grouped)
    assert not out_of_space(OSError(errno.EACCES, "Permission denied"))
    assert not out_of_space(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not out_of_space(RuntimeError("disk on fire"))
