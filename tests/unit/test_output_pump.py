"""The log pump in-process: one thread copies every stage pipe into its
log; starting a feed wakes no thread, and finishing one that already ended
asks nothing of the pump."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from conveyor.daemon.executors.base import LogOutput
from conveyor.daemon.executors.pump import OutputPump
from conveyor.daemon.logstore import StageLog


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A stage's pipe: (read end, write end), both closed afterwards."""
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    yield rfd, wfd
    for fd in (rfd, wfd):
        with contextlib.suppress(OSError):  # a test may have closed it
            os.close(fd)


def _wake_pending(pump: OutputPump) -> bool:
    try:
        return bool(os.read(pump._wake_r, 4096))
    except BlockingIOError:
        return False


async def test_a_feed_ends_at_the_pipe_end_without_waking_the_pump(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    rfd, wfd = pipe
    pump = OutputPump()
    log = StageLog(tmp_path / "s.log")
    feed = pump.start(rfd, LogOutput(log), trio.CancelScope())
    assert not _wake_pending(pump), "starting a feed wakes no thread"
    os.write(wfd, b"hello\n")
    os.close(wfd)
    with trio.fail_after(5):
        await feed.done.wait()
    assert feed.closed and feed.error is None
    pump.finish(feed)
    assert not _wake_pending(pump), "finishing an ended feed asks nothing"
    assert log.path.read_bytes() == b"hello\n"
    assert log.size == 6


async def test_finish_lets_go_of_a_pipe_another_process_still_holds(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    rfd, wfd = pipe
    pump = OutputPump()
    log = StageLog(tmp_path / "s.log")
    feed = pump.start(rfd, LogOutput(log), trio.CancelScope())
    os.write(wfd, b"partial")
    with trio.move_on_after(0.2):
        await feed.done.wait()
    assert not feed.done.is_set(), "the write end is still open"
    pump.finish(feed)
    with trio.fail_after(5):
        await feed.done.wait()
    assert log.path.read_bytes() == b"partial"


async def test_a_log_that_cannot_be_made_fails_the_feed(
    tmp_path: Path, pipe: tuple[int, int]
) -> None:
    rfd, wfd = pipe
    pump = OutputPump()
    (tmp_path / "file").write_text("")
    log = StageLog(tmp_path / "file" / "s.log")  # its folder is a file
    scope = trio.CancelScope()
    feed = pump.start(rfd, LogOutput(log), scope)
    os.write(wfd, b"x")
    with trio.fail_after(5):
        await feed.done.wait()
    assert isinstance(feed.error, OSError)
    await trio.testing.wait_all_tasks_blocked()
    assert scope.cancel_called


class _CountingOutput(LogOutput):
    """A log output whose writers count their writes."""

    writes = 0

    def open_writer(self):  # type: ignore[no-untyped-def]
        writer = super().open_writer()
        write = writer.write

        def counting(data: bytes | memoryview) -> None:
            _CountingOutput.writes += 1
            write(data)

        writer.write = counting  # type: ignore[method-assign]
        return writer


async def test_a_fast_writers_small_writes_are_copied_in_large_reads(tmp_path: Path) -> None:
    size = 20 << 20
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    pump = OutputPump()
    log = StageLog(tmp_path / "s.log")
    _CountingOutput.writes = 0
    try:
        # tr writes 4 KiB at a time: 5,120 writes (about 800 reads without the wait
        # on this VM, 60 with it)
        proc = await trio.lowlevel.open_process(
            ["sh", "-c", f"head -c {size} /dev/zero | tr '\\0' x"], stdout=wfd
        )
        os.close(wfd)
        feed = pump.start(rfd, _CountingOutput(log), trio.CancelScope())
        with trio.fail_after(60):
            await proc.wait()
            await feed.done.wait()
    finally:
        os.close(rfd)
    assert feed.error is None and log.size == size
    assert _CountingOutput.writes < 300, "the pump waited for output to gather before reading"


async def test_the_pump_waits_after_a_small_read_only_and_finish_cuts_the_wait(
    tmp_path: Path, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.daemon.executors import pump as pump_module

    monkeypatch.setattr(pump_module, "COALESCE", 30.0)
    rfd, wfd = pipe
    log = StageLog(tmp_path / "s.log")
    pump = OutputPump()
    full = pump_module.FULL_READ

    async def size_reaches(size: int) -> None:
        with trio.fail_after(5):
            while log.size < size:  # noqa: ASYNC110 (counted in batches)
                await trio.sleep(0.01)

    fcntl.fcntl(wfd, pump_module.F_SETPIPE_SZ, pump_module.PIPE_SIZE)
    os.write(wfd, b"x" * full)  # there before the pump reads: one full read
    feed = pump.start(rfd, LogOutput(log), trio.CancelScope())
    await size_reaches(full)
    os.write(wfd, b"line\n")
    await size_reaches(full + 5)  # after a full read the pump looked again at once
    os.write(wfd, b"more\n")
    await trio.sleep(0.3)
    assert log.size == full + 5, "after a small read the pump lets output gather"
    os.close(wfd)
    pump.finish(feed)
    with trio.fail_after(5):
        await feed.done.wait()
    assert log.size == full + 10
    assert log.path.read_bytes().endswith(b"line\nmore\n")


async def test_a_pipes_end_cuts_the_wait_short(
    tmp_path: Path, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage's end waits for no gathering: once its process has closed
    the pipe, the pump reads to the end and lets go without being asked."""
    from conveyor.daemon.executors import pump as pump_module

    monkeypatch.setattr(pump_module, "COALESCE", 30.0)
    rfd, wfd = pipe
    log = StageLog(tmp_path / "s.log")
    pump = OutputPump()
    feed = pump.start(rfd, LogOutput(log), trio.CancelScope())
    os.write(wfd, b"banner\n")
    with trio.fail_after(5):
        while log.size < 7:  # noqa: ASYNC110 (counted in batches)
            await trio.sleep(0.01)
    os.write(wfd, b"last\n")  # the pump is waiting for more now
    os.close(wfd)
    with trio.fail_after(5):
        await feed.done.wait()
    assert log.path.read_bytes() == b"banner\nlast\n"
