"""Giving memory back once the daemon is idle: when it happens (trio's
mock clock), and the store's caches emptied while it is in use (a real
SQLite database)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from conveyor.daemon.memory import IdleRelease, release_memory, trim_malloc
from conveyor.daemon.store.database import Database


class Releases:
    def __init__(self) -> None:
        self.at: list[float] = []

    async def release(self) -> None:
        self.at.append(trio.current_time())


async def test_memory_is_given_back_once_idle_for_the_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    releases, busy = Releases(), [False]
    release = IdleRelease(releases.release, lambda: not busy[0], delay=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(release.serve)
        start = trio.current_time()
        release.went_idle()
        release.went_idle()  # twice before the delay: one release
        await trio.sleep(2)
        assert len(releases.at) == 1 and release.releases == 1
        assert 0.5 <= releases.at[0] - start < 0.6
        # a run came during the delay and is still going: nothing is given back
        release.went_idle()
        busy[0] = True
        await trio.sleep(2)
        assert release.releases == 1
        # its end says when to try again
        busy[0] = False
        release.went_idle()
        await trio.sleep(2)
        assert release.releases == 2
        nursery.cancel_scope.cancel()


async def test_the_caches_shrink_while_reads_and_writes_go_on(tmp_path: Path) -> None:
    db = await trio.to_thread.run_sync(Database, tmp_path / "conveyor.db")
    try:
        await db.write(lambda conn: conn.execute("CREATE TABLE t (n INTEGER)"))
        done = 0

        async def work(n: int) -> None:
            nonlocal done
            await db.write(lambda conn: conn.execute("INSERT INTO t VALUES (?)", (n,)))
            await db.read(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone())
            done += 1

        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(work, n)
                if n % 10 == 0:
                    nursery.start_soon(db.shrink_memory)
        count = await db.read(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0])
        assert done == 40 and count == 40
        await db.shrink_memory()  # alone, too
    finally:
        db.close()


async def test_releasing_memory_empties_the_caches_and_trims_malloc(tmp_path: Path) -> None:
    shrunk: list[bool] = []

    async def shrink() -> None:
        shrunk.append(True)

    await release_memory(shrink)
    assert shrunk == [True]
    assert trim_malloc() is True
