"""A stage process writes its own log (issue 12): its stdout and stderr are
the log file, so no daemon thread copies its output; followers learn of it
from the file's size, one of them looking for all; a masked output still
goes through the pump's pipe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from conveyor.daemon.executors import process
from conveyor.daemon.executors.base import LogOutput, MaskedOutput, ProcessRequest
from conveyor.daemon.logstore import StageLog
from conveyor.daemon.secrets.masking import Masker

ENV = {"PATH": "/usr/bin:/bin"}


def request(tmp_path: Path, script: str) -> ProcessRequest:
    return ProcessRequest(argv=["sh", "-c", script], cwd=tmp_path, env=ENV, kill_grace=0.5)


async def follow(log: StageLog, into: bytearray, first: trio.Event | None = None) -> None:
    async for offset, data in log.chunks(0, follow=True):
        assert offset == len(into), "chunks are contiguous"
        into += data
        if first is not None:
            first.set()


async def test_the_process_writes_to_the_log_file_and_a_follower_sees_every_byte(
    tmp_path: Path,
) -> None:
    log = StageLog(tmp_path / "run" / "s.log")  # the run's folder is made with its first log
    seen = bytearray()
    script = "readlink /proc/self/fd/1; readlink /proc/self/fd/2; sleep 0.2; echo out; echo err >&2"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, log, seen)
        assert await process.run_in_process_group(request(tmp_path, script), LogOutput(log)) == 0
        log.close()
    path = str(log.path).encode()
    written = log.path.read_bytes()
    assert written == path + b"\n" + path + b"\nout\nerr\n", "stdout and stderr are the file"
    assert bytes(seen) == written
    assert log.size == len(written)


async def test_a_masked_output_goes_through_the_pumps_pipe(tmp_path: Path) -> None:
    log = StageLog(tmp_path / "s.log")
    output = MaskedOutput(LogOutput(log), Masker({"TOKEN": "hunter2-hunter2"}))
    script = "readlink /proc/self/fd/1; echo hunter2-hunter2"
    assert await process.run_in_process_group(request(tmp_path, script), output) == 0
    first, second = log.path.read_bytes().splitlines()
    assert first.startswith(b"pipe:")
    assert b"hunter2" not in second


async def test_whether_the_last_line_ended_is_known_after_the_process(tmp_path: Path) -> None:
    log = StageLog(tmp_path / "s.log")
    output = LogOutput(log)
    await process.run_in_process_group(request(tmp_path, "printf 'no end'"), output)
    assert not output.at_line_start
    await process.run_in_process_group(request(tmp_path, "echo; printf ''"), output)
    assert output.at_line_start
    assert log.path.read_bytes() == b"no end\n"


async def test_one_follower_looks_at_the_file_for_all_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = StageLog(tmp_path / "s.log")
    looks = 0
    fstat = os.fstat

    def counting(fd: int) -> os.stat_result:
        nonlocal looks
        looks += 1
        return fstat(fd)

    monkeypatch.setattr(os, "fstat", counting)
    followers = [bytearray() for _ in range(20)]
    quiet_looks = 0

    async def stage() -> None:
        nonlocal quiet_looks
        script = "sleep 0.6; echo late"
        await process.run_in_process_group(request(tmp_path, script), LogOutput(log))
        log.close()

    async with trio.open_nursery() as nursery:
        for seen in followers:
            nursery.start_soon(follow, log, seen)
        nursery.start_soon(stage)
        await trio.sleep(0.1)
        start = looks
        await trio.sleep(0.4)  # the process is quiet
        quiet_looks = looks - start
    assert all(bytes(seen) == b"late\n" for seen in followers)
    # one follower, at doubling intervals (5 ms to 100 ms): about 5 looks in
    # these 0.4 s; twenty followers looking each would make about 100
    assert 0 < quiet_looks <= 20


async def test_when_the_looking_follower_leaves_another_takes_over(tmp_path: Path) -> None:
    log = StageLog(tmp_path / "s.log")
    script = "sleep 0.3; echo written; sleep 30"
    leaving, staying = bytearray(), bytearray()
    got = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            stage = request(tmp_path, script)
            nursery.start_soon(process.run_in_process_group, stage, LogOutput(log))
            async with trio.open_nursery() as first:
                first.start_soon(follow, log, leaving)  # it looks for both
                await trio.sleep(0.05)
                nursery.start_soon(follow, log, staying, got)
                await trio.sleep(0.05)
                first.cancel_scope.cancel()
            await got.wait()  # while the process still runs
            nursery.cancel_scope.cancel()
    assert bytes(staying) == b"written\n"
    assert leaving == b""


async def test_a_process_that_cuts_its_log_leaves_what_the_file_holds(tmp_path: Path) -> None:
    log = StageLog(tmp_path / "s.log")
    cut = "import os; os.ftruncate(1, 0)"
    script = f"echo first; python3 -c '{cut}'; echo second"
    assert await process.run_in_process_group(request(tmp_path, script), LogOutput(log)) == 0
    assert log.path.read_bytes() == b"second\n", "appending goes on at the new end"
    assert log.size == len(b"second\n")
    log.close()
    seen = bytearray()
    with trio.fail_after(5):
        await follow(log, seen)
    assert bytes(seen) == b"second\n"


async def test_a_log_cut_below_the_size_seen_ends_its_readers_at_the_cut(tmp_path: Path) -> None:
    log = StageLog(tmp_path / "s.log")
    script = "echo first; sleep 0.3; python3 -c 'import os; os.ftruncate(1, 0)'; echo 2"
    seen = bytearray()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow, log, seen)
            stage = request(tmp_path, script)
            assert await process.run_in_process_group(stage, LogOutput(log)) == 0
            log.close()
    assert log.size == len(b"first\n"), "the size seen never shrinks"
    assert bytes(seen) == b"first\n", "the follower saw the first line, then the log ended"


async def test_processes_of_one_stage_running_at_once_share_its_log(tmp_path: Path) -> None:
    log = StageLog(tmp_path / "s.log")
    output = LogOutput(log)
    seen = bytearray()

    async def one(name: str, pause: float) -> None:
        script = f"echo {name}-start; sleep {pause}; echo {name}-end"
        assert await process.run_in_process_group(request(tmp_path, script), output) == 0

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow, log, seen)
            async with trio.open_nursery() as both:
                both.start_soon(one, "first", 0.2)
                both.start_soon(one, "second", 0.4)
            log.close()
    lines = log.path.read_bytes().splitlines()
    assert sorted(lines) == sorted([b"first-start", b"first-end", b"second-start", b"second-end"])
    assert lines[-1] == b"second-end", "the second wrote after the first had let go"
    assert bytes(seen) == log.path.read_bytes()
    assert output.at_line_start
