"""A daemon killed with SIGKILL restarts with every acknowledged run intact,
and a restart finishes what a killed start-up began (issue 9, item 6)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from conveyor.daemon.spare_workspaces import SPARE_FOLDER
from conveyor.daemon.store import Database, RunStore
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


def test_a_restart_finishes_a_recovery_killed_before_it_removed_the_workspaces(
    daemon_home: Path, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    """The state a start-up leaves when SIGKILL hits it after it recorded
    the runs interrupted, before it removed their workspaces: the next
    start-up removes them (and those of runs it does not know)."""
    pidfiles = [tmp_path / f"stage{i}.pid" for i in range(3)]
    repos = [
        pipeline_repo(f"name: held{i}\nstages:\n  s:\n    run: echo $$ > {pidfile}; sleep 60\n")
        for i, pidfile in enumerate(pidfiles)
    ]
    daemon = DaemonProcess(daemon_home).start()
    runs = [daemon.submit(repo.path) for repo in repos]
    pids = [int(wait_for_file(pidfile)) for pidfile in pidfiles]
    daemon.kill()
    workspaces = daemon_home / "workspaces"
    stray = workspaces / ("f" * 20)  # a run the database does not know
    stray.mkdir()
    (workspaces / f"{runs[0].id}.reports").mkdir()
    (workspaces / f"{runs[1].id}.home").mkdir()  # a stage user's home for the run
    # What the killed start-up had done: the runs recorded as interrupted.
    db = Database(daemon_home / "conveyor.db")
    try:
        recovered = RunStore(db).recover_sync("the daemon stopped while the run was in progress")
    finally:
        db.close()
    assert sorted(recovered.interrupted) == sorted(run.id for run in runs)
    assert all((workspaces / run.id).is_dir() for run in runs)

    restarted = DaemonProcess(daemon_home).start()
    try:
        # what is left are spare workspaces, made afresh at start-up
        assert sorted(p.name for p in workspaces.iterdir()) == [SPARE_FOLDER]
        assert not any(alive(pid) for pid in pids)
        for run in runs:
            final = restarted.stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
            assert final.status == runs_pb2.RUN_STATUS_INTERRUPTED
    finally:
        restarted.stop()
