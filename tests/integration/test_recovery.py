"""A daemon killed with SIGKILL restarts with every acknowledged run intact."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.processes import alive, wait_for_file
from tests.support.repos import GitRepo


def test_sigkill_mid_run_keeps_runs_and_logs_and_marks_in_flight_runs_interrupted(
    daemon_home: Path, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    pidfile = tmp_path / "stage.pid"
    slow = pipeline_repo(
        f"""
name: slow
stages:
  first:
    run: echo first-done
  long:
    needs: [first]
    run: |
      echo before-crash
      echo $$ > {pidfile}
      sleep 60
  last:
    needs: [long]
    run: echo never
"""
    )
    quick = pipeline_repo("name: quick\nstages:\n  s:\n    run: echo requeued-ran\n")
    daemon = DaemonProcess(daemon_home, args=["--max-concurrent-runs", "1"]).start()
    in_flight = daemon.submit(slow.path)
    stage_pid = int(wait_for_file(pidfile))
    queued = daemon.submit(quick.path)  # acknowledged, waiting for the only slot
    assert queued.status == runs_pb2.RUN_STATUS_QUEUED
    daemon.stop(signal.SIGKILL)

    restarted = DaemonProcess(daemon_home).start()
    try:
        assert not alive(stage_pid), "the restarted daemon stops what its predecessor left"
        run = restarted.stub.GetRun(runs_pb2.GetRunRequest(run_id=in_flight.id))
        assert run.status == runs_pb2.RUN_STATUS_INTERRUPTED
        assert "daemon stopped" in run.reason
        assert stage(run, "first").status == runs_pb2.STAGE_STATUS_SUCCEEDED
        assert stage(run, "long").status == runs_pb2.STAGE_STATUS_INTERRUPTED
        assert stage(run, "last").status == runs_pb2.STAGE_STATUS_SKIPPED
        assert b"before-crash" in restarted.logs(in_flight.id, "long")
        assert b"first-done" in restarted.logs(in_flight.id, "first")
        events = list(restarted.events(in_flight.id))
        assert events[-1].run_status == runs_pb2.RUN_STATUS_INTERRUPTED
        assert [e.seq for e in events] == list(range(1, len(events) + 1))

        requeued = restarted.wait(queued.id)
        assert requeued.status == runs_pb2.RUN_STATUS_SUCCEEDED
        assert b"requeued-ran" in restarted.logs(queued.id, "s")
    finally:
        restarted.stop()


def test_sigterm_interrupts_running_runs_and_keeps_queued_ones(
    daemon_home: Path, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    slow = pipeline_repo("name: slow\nstages:\n  s:\n    run: echo hi; sleep 60\n")
    daemon = DaemonProcess(
        daemon_home, args=["--max-concurrent-runs", "1", "--kill-grace", "1"]
    ).start()
    running = daemon.submit(slow.path)
    daemon.wait_for_stage(running.id, "s")
    queued = daemon.submit(slow.path)
    assert daemon.stop(signal.SIGTERM) == 0

    restarted = DaemonProcess(daemon_home, args=["--kill-grace", "1"]).start()
    try:
        run = restarted.stub.GetRun(runs_pb2.GetRunRequest(run_id=running.id))
        assert run.status == runs_pb2.RUN_STATUS_INTERRUPTED
        assert stage(run, "s").status == runs_pb2.STAGE_STATUS_INTERRUPTED
        restarted.wait_for_stage(queued.id, "s")
        restarted.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=queued.id))
    finally:
        restarted.stop()
