"""Stopping a stage's process group, in-process: what is left after the
main process goes is found by scanning /proc in worker threads, never on
the trio loop, and killed after the grace period."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

from conveyor.daemon.executors import process
from conveyor.daemon.executors.base import LogOutput, ProcessRequest
from conveyor.daemon.logstore import StageLog
from tests.support.processes import alive, wait_for_file

# The main process exits on SIGTERM; the background one it started ignores it.
STUBBORN = """
sh -c 'trap "" TERM; echo $$ > {pidfile}; while true; do sleep 0.05; done' &
trap 'exit 143' TERM
wait
"""


@pytest.fixture
def scans_on(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each /proc scan, whether it ran on the main (trio) thread."""
    on_main: list[bool] = []
    scan = process._group_alive

    def recording(pgid: int) -> bool:
        on_main.append(threading.current_thread() is threading.main_thread())
        return scan(pgid)

    monkeypatch.setattr(process, "_group_alive", recording)
    return on_main


async def test_a_cancelled_stage_kills_a_sigterm_ignoring_child_scanning_off_the_loop(
    tmp_path: Path, scans_on: list[bool]
) -> None:
    pidfile = tmp_path / "child.pid"
    request = ProcessRequest(
        argv=["sh", "-c", STUBBORN.format(pidfile=pidfile)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        kill_grace=0.5,
    )
    log = LogOutput(StageLog(tmp_path / "stage.log"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(process.run_in_process_group, request, log)
        child = int(await trio.to_thread.run_sync(wait_for_file, pidfile))
        nursery.cancel_scope.cancel()
    assert not alive(child), "the child that ignored SIGTERM was killed after the grace period"
    assert scans_on, "the group was watched while it emptied"
    assert not any(scans_on), "every /proc scan ran in a worker thread"


async def test_a_stage_that_leaves_nothing_behind_costs_no_scan(
    tmp_path: Path, scans_on: list[bool]
) -> None:
    request = ProcessRequest(argv=["true"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert await process.run_in_process_group(request, LogOutput(StageLog(tmp_path / "s.log"))) == 0
    assert scans_on == []
