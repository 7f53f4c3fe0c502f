"""The log pump in-process: one thread copies every stage pipe into its
log; starting a feed wakes no thread, and finishing one that already ended
asks nothing of the pump."""

from __future__ import annotations

import contextlib
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
