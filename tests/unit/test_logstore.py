"""Stage logs in-process: followers that start before, during or after the
writes see every byte once, from any offset, in bounded chunks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from conveyor.daemon import logstore
from conveyor.daemon.logstore import LogStore, StageLog

RUN = "0123456789ab00000000"


async def collect(
    log: StageLog, offset: int = 0, *, follow: bool = True
) -> list[tuple[int, bytes]]:
    return [chunk async for chunk in log.chunks(offset, follow=follow)]


def joined(chunks: list[tuple[int, bytes]], start: int = 0) -> bytes:
    """The chunks' bytes, checking that each starts where the last ended."""
    expected = start
    for offset, data in chunks:
        assert offset == expected, "chunks are contiguous"
        expected += len(data)
    return b"".join(data for _, data in chunks)


async def test_followers_before_during_and_after_the_writes_see_every_byte_once(
    tmp_path: Path,
) -> None:
    store = LogStore(tmp_path)
    results: dict[str, bytes] = {}
    first_part_read = trio.Event()

    async def follow(name: str, log: StageLog, on_first: trio.Event | None = None) -> None:
        chunks: list[tuple[int, bytes]] = []
        async for chunk in log.chunks(0, follow=True):
            chunks.append(chunk)
            if on_first is not None:
                on_first.set()
        results[name] = joined(chunks)

    async with trio.open_nursery() as nursery:
        # Before the stage runs: a reader of a stage not finished gets the live log.
        before = await store.reader(RUN, "build", finished=False)
        nursery.start_soon(follow, "before", before)
        live = store.open_live(RUN, "build")
        assert live is before
        await live.write(b"part one\n")
        # During: a follower that joins once part one is written, and has
        # read it before part two comes.
        during = await store.reader(RUN, "build", finished=False)
        nursery.start_soon(follow, "during", during, first_part_read)
        await first_part_read.wait()
        await live.write(b"part two, no newline")
        store.release(RUN, "build")
    everything = b"part one\npart two, no newline"
    assert results == {"before": everything, "during": everything}
    # After: the stage is finished; a reader gets the closed log and stops at its end.
    after = await store.reader(RUN, "build", finished=True)
    assert after.closed and after.size == len(everything)
    assert joined(await collect(after)) == everything
    assert (tmp_path / RUN / "build.log").read_bytes() == everything


async def test_a_finished_log_no_longer_remembered_is_read_from_its_file(tmp_path: Path) -> None:
    (tmp_path / RUN).mkdir()
    (tmp_path / RUN / "old.log").write_bytes(b"from an earlier daemon\n")
    store = LogStore(tmp_path)
    log = await store.reader(RUN, "old", finished=True)
    assert (log.size, log.closed) == (23, True)
    assert joined(await collect(log)) == b"from an earlier daemon\n"
    missing = await store.reader(RUN, "never-ran", finished=True)
    assert await collect(missing) == []


async def test_reading_resumes_from_a_byte_offset(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    live = store.open_live(RUN, "test")
    data = b"".join(f"line {i}\n".encode() for i in range(1000))
    await live.write(data)
    store.release(RUN, "test")
    log = await store.reader(RUN, "test", finished=True)
    assert joined(await collect(log, 1234), start=1234) == data[1234:]
    assert await collect(log, len(data)) == [], "nothing after the end"
    assert await collect(log, len(data) + 10) == []


async def test_a_live_log_read_without_following_stops_at_what_is_written(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    live = store.open_live(RUN, "s")
    await live.write(b"so far")
    reader = await store.reader(RUN, "s", finished=False)
    assert joined(await collect(reader, follow=False)) == b"so far"
    store.release(RUN, "s")


async def test_large_output_comes_in_chunks_of_bounded_size(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    live = store.open_live(RUN, "big")
    data = bytes(range(256)) * (3 * logstore.CHUNK // 256 + 7)
    await live.write(data)
    store.release(RUN, "big")
    chunks = await collect(await store.reader(RUN, "big", finished=True))
    assert len(chunks) == 4
    assert all(len(chunk) <= logstore.CHUNK for _, chunk in chunks)
    assert joined(chunks) == data


async def test_a_truncated_file_ends_the_stream_instead_of_spinning(tmp_path: Path) -> None:
    path = tmp_path / "short.log"
    path.write_bytes(b"12345")
    log = StageLog(path, size=10, closed=True)  # the record says more than the file has
    assert joined(await collect(log)) == b"12345"


async def test_retries_keep_one_live_log_and_recently_closed_sizes_are_remembered(
    tmp_path: Path,
) -> None:
    store = LogStore(tmp_path)
    first = store.open_live(RUN, "flaky")
    await first.write(b"attempt 1\n")
    assert store.open_live(RUN, "flaky") is first
    await first.write(b"attempt 2\n")
    store.release(RUN, "flaky")
    assert store.live(RUN, "flaky") is None
    (tmp_path / RUN / "flaky.log").write_bytes(b"attempt 1\nattempt 2\nwritten later\n")
    remembered = await store.reader(RUN, "flaky", finished=True)
    assert remembered.size == 20, "the size at release, not what the file grew to"


async def test_followers_at_the_same_offset_share_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every follower of a live log wakes at its new bytes: one read for
    all of them, not one (and one worker-thread hop) each."""
    log = StageLog(tmp_path / "s.log")
    log.path.write_bytes(b"")
    reads = 0
    pread = os.pread

    def counted(fd: int, size: int, offset: int) -> bytes:
        nonlocal reads
        reads += 1
        return pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", counted)
    results: list[list[tuple[int, bytes]]] = []

    async def follow() -> None:
        results.append(await collect(log))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        for line in (b"first line\n", b"second\n"):
            with log.path.open("ab") as file:
                file.write(line)
            log.advance(len(line))
            await trio.sleep(0.1)
            await trio.testing.wait_all_tasks_blocked()
        log.close()
    assert [joined(chunks) for chunks in results] == [b"first line\nsecond\n"] * 20
    assert reads <= 4, f"{reads} reads for 20 followers of 2 writes"


def test_a_runs_logs_are_made_ahead_empty_and_what_is_there_is_kept(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs")
    store.prepare(RUN, ["build", "test"])
    assert sorted(p.name for p in (tmp_path / "logs" / RUN).iterdir()) == ["build.log", "test.log"]
    assert store.path(RUN, "build").read_bytes() == b""
    store.path(RUN, "test").write_bytes(b"kept\n")
    store.prepare(RUN, ["test", "deploy"])
    assert store.path(RUN, "test").read_bytes() == b"kept\n"
    assert store.path(RUN, "deploy").read_bytes() == b""
