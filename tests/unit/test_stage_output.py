"""A stage's output knows whether its last byte ended a line, so Conveyor's
own lines never glue onto a tool's unterminated output (issue 8)."""

from __future__ import annotations

from pathlib import Path

import trio

from conveyor.daemon.executors.base import LogOutput, conveyor_line
from conveyor.daemon.logstore import StageLog
from tests.support.plugins import stage_context

LINE = b"\x1b[1;36m[conveyor]\x1b[0m "


async def test_conveyor_lines_start_on_a_line_of_their_own(tmp_path: Path) -> None:
    ctx, log = stage_context({"uses": "run", "run": "true"}, tmp_path, tmp_path / "home")
    assert ctx.log.at_line_start, "an empty log"
    await ctx.log_line("first")
    await ctx.log.write(b"progress 50%")
    assert not ctx.log.at_line_start
    await ctx.log_line("cancelled")
    await ctx.log.write(b"done\n")
    await ctx.log_line("end")
    assert log.path.read_bytes() == (
        LINE + b"first\nprogress 50%\n" + LINE + b"cancelled\ndone\n" + LINE + b"end\n"
    )


async def test_writes_from_a_pump_thread_count_and_every_output_of_the_log_agrees(
    tmp_path: Path,
) -> None:
    log = StageLog(tmp_path / "s.log")
    output = LogOutput(log)

    def pump(data: bytes) -> None:
        with output.open_writer() as writer:
            writer.write(memoryview(data))

    await trio.to_thread.run_sync(pump, b"line\nno end")
    assert not output.at_line_start
    retry = LogOutput(log)  # the next attempt's output of the same log
    assert not retry.at_line_start
    await retry.write(conveyor_line("retrying", at_line_start=retry.at_line_start))
    assert output.at_line_start and retry.at_line_start
    await trio.to_thread.run_sync(pump, b"")
    assert output.at_line_start, "writing nothing changes nothing"
    assert log.path.read_bytes() == b"line\nno end\n" + LINE + b"retrying\n"
    assert LogOutput(StageLog(tmp_path / "other.log")).at_line_start
