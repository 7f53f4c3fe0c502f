"""What SIGTERM and SIGKILL leave behind: runs submitted during a shutdown
are kept, and a restart stops every stage process of the killed daemon
however its home was spelled (issue 9, item 7)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.processes import alive, wait_for_file
from tests.support.repos import GitRepo


def _wait_not_serving(daemon: DaemonProcess, timeout: float = 10) -> None:
    """Poll the health check until the daemon reports its shutdown."""
    health = health_pb2_grpc.HealthStub(daemon.channel)
    deadline = time.monotonic() + timeout
    while True:
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the daemon never reported NOT_SERVING")
        time.sleep(0.02)


def test_a_run_submitted_during_shutdown_is_stored_and_runs_after_the_restart(
    daemon_home: Path, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    release = tmp_path / "release"
    slow = pipeline_repo(
        f"name: slow\nstages:\n  s:\n    run: while [ ! -e {release} ]; do sleep 0.02; done\n"
    )
    quick = pipeline_repo("name: quick\nstages:\n  s:\n    run: echo ran-after-restart\n")
    daemon = DaemonProcess(
        daemon_home, args=["--shutdown-mode", "finish", "--shutdown-timeout", "60"]
    ).start()
    running = daemon.submit(slow.path)
    daemon.wait_for_stage(running.id, "s")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    _wait_not_serving(daemon)  # draining: the running run may finish

    reply = daemon.stub.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=str(quick.path), ref="main"), timeout=30
    )
    assert reply.created
    assert reply.run.status == runs_pb2.RUN_STATUS_QUEUED
    stored = daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=reply.run.id), timeout=10)
    assert stored.status == runs_pb2.RUN_STATUS_QUEUED

    release.touch()
    assert daemon.proc.wait(timeout=60) == 0  # one SIGTERM: a second would kill it
    daemon.stop()

    restarted = DaemonProcess(daemon_home).start()
    try:
        assert restarted.wait(running.id).status == runs_pb2.RUN_STATUS_SUCCEEDED
        final = restarted.wait(reply.run.id)
        assert final.status == runs_pb2.RUN_STATUS_SUCCEEDED
        assert b"ran-after-restart" in restarted.logs(final.id, "s")
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


@pytest.fixture
def home_link(daemon_home: Path) -> Iterator[Path]:
    """A symlink to the daemon's home (in a short folder: socket paths are short)."""
    folder = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    link = folder / "home"
    link.symlink_to(daemon_home)
    try:
        yield link
    finally:
        shutil.rmtree(folder)


def test_a_restart_by_the_real_path_stops_the_stages_of_a_daemon_started_through_a_symlink(
    daemon_home: Path, home_link: Path, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    pidfiles = [tmp_path / f"s{i}.pid" for i in range(4)]
    stages = "".join(
        f"  s{i}:\n    run: echo $$ > {pidfile}; sleep 60\n" for i, pidfile in enumerate(pidfiles)
    )
    repo = pipeline_repo(f"name: four\nstages:\n{stages}")
    daemon = DaemonProcess(home_link).start()
    daemon.submit(repo.path)
    pids = [int(wait_for_file(pidfile)) for pidfile in pidfiles]
    daemon.kill()
    assert all(alive(pid) for pid in pids), "a SIGKILLed daemon leaves its stages running"

    restarted = DaemonProcess(daemon_home).start()
    try:
        survivors = [pid for pid in pids if alive(pid)]
        assert survivors == [], "the restarted daemon stops every stage of its predecessor"
    finally:
        restarted.stop()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
