"""Cancellation and timeouts stop whole process groups and are recorded as such.

The tests share one daemon (``shared_daemon``, kill grace 1 s); each leaves
no run of its own running. Run timeouts, concurrency groups and cancelling
queued runs are tested in-process in ``tests/unit/test_scheduler.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.processes import alive, wait_for_file
from tests.support.repos import GitRepo


@pytest.fixture
def daemon(shared_daemon: DaemonProcess) -> DaemonProcess:
    return shared_daemon


# The stage starts a grandchild that ignores SIGTERM and writes its pid.
STUBBORN = """
name: stubborn
stages:
  hang:
    {extra}
    run: |
      echo started
      sh -c 'trap "" TERM; echo $$ > {pidfile}; while true; do sleep 0.1; done' &
      trap 'echo got TERM; exit 143' TERM
      wait
  after:
    needs: [hang]
    run: echo never
"""


def _stubborn(
    pipeline_repo: Callable[[str], GitRepo], tmp_path: Path, extra: str = ""
) -> tuple[GitRepo, Path]:
    pidfile = tmp_path / "grandchild.pid"
    return pipeline_repo(STUBBORN.format(pidfile=pidfile, extra=extra)), pidfile


def test_cancel_kills_a_grandchild_that_ignores_sigterm_after_the_grace_period(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    repo, pidfile = _stubborn(pipeline_repo, tmp_path)
    run = daemon.submit(repo.path)
    grandchild = int(wait_for_file(pidfile))
    assert alive(grandchild)
    started = time.monotonic()
    reply = daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="test says stop"))
    took = time.monotonic() - started
    assert reply.run.status == runs_pb2.RUN_STATUS_CANCELLED
    assert reply.run.reason == "test says stop"
    assert not alive(grandchild)
    assert took > 0.9, "SIGKILL comes after the 1 s grace period, not before"
    hang = stage(reply.run, "hang")
    assert hang.status == runs_pb2.STAGE_STATUS_CANCELLED
    assert stage(reply.run, "after").status == runs_pb2.STAGE_STATUS_CANCELLED
    log = daemon.logs(run.id, "hang")
    lines = log.splitlines()  # the log also echoes the command, trap included
    assert b"started" in lines and b"got TERM" in lines, "the stage saw SIGTERM and its log is kept"


def test_stage_timeout_is_recorded_as_timed_out_and_kills_the_group(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    repo, pidfile = _stubborn(pipeline_repo, tmp_path, extra="timeout: 1s")
    run = daemon.submit(repo.path)
    grandchild = int(wait_for_file(pidfile))
    final = daemon.wait(run.id)
    assert final.status == runs_pb2.RUN_STATUS_TIMED_OUT
    hang = stage(final, "hang")
    assert hang.status == runs_pb2.STAGE_STATUS_TIMED_OUT
    assert "timed out after 1s" in hang.reason
    assert stage(final, "after").status == runs_pb2.STAGE_STATUS_SKIPPED
    assert not alive(grandchild)
    assert b"timed out" in daemon.logs(run.id, "hang")


def test_cancel_of_a_finished_run_is_failed_precondition(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo("name: quick\nstages:\n  s:\n    run: 'true'\n")
    run = daemon.wait(daemon.submit(repo.path).id)
    with pytest.raises(grpc.RpcError) as err:
        daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already finished" in (err.value.details() or "")


def test_stage_leftover_background_processes_are_killed_when_it_ends(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    pidfile = tmp_path / "bg.pid"
    repo = pipeline_repo(
        f"name: bg\nstages:\n  s:\n    run: (sleep 60 & echo $! > {pidfile}) ; echo done\n"
    )
    run = daemon.wait(daemon.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
    assert not alive(int(wait_for_file(pidfile)))
