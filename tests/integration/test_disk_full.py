"""A full disk fails the stage that filled it, not the daemon (issue 9, item 4).

The daemon's home is on a small file system the test mounts (a tmpfs of
8 MiB): a stage writing 20 MB fills it. The daemon must keep serving reads,
refuse new runs while free space is below ``min_free_space``, start while
the disk is full, and take runs again by itself once space is freed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.repos import GitRepo

MiB = 1 << 20
#: The floor the daemons here use (--min-free-space, in MiB).
FLOOR_MIB = 1

FLOOD = """
name: flood
stages:
  big:
    run: head -c 20000000 /dev/zero
  after:
    needs: [big]
    run: echo never
"""
QUICK = "name: quick\nstages:\n  s:\n    run: echo space-is-back\n"


@dataclass
class SmallDisk:
    """A mounted 8 MiB file system."""

    root: Path

    def free(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def fill(self, name: str, size: int | None = None) -> Path:
        """Write a filler file of ``size`` bytes (default: until the disk is full)."""
        path = self.root / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        block = b"\0" * 65536
        written = 0
        try:
            while size is None or written < size:
                chunk = block if size is None else block[: min(len(block), size - written)]
                written += os.write(fd, chunk)
        except OSError as exc:
            if size is not None or exc.errno != 28:
                raise
        finally:
            os.close(fd)
        return path


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    root = Path(tempfile.mkdtemp(prefix="cv-disk-", dir="/tmp"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        root.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
        root.rmdir()


class SmallHomeDaemon(DaemonProcess):
    """A daemon whose home is on the small disk; its own log is kept off it."""

    log_file: Path = Path()

    @property
    def log_path(self) -> Path:
        return self.log_file


def _daemon(small_disk: SmallDisk, log_dir: Path) -> SmallHomeDaemon:
    daemon = SmallHomeDaemon(
        small_disk.root / "home", args=["--min-free-space", str(FLOOR_MIB), "--kill-grace", "1"]
    )
    daemon.log_file = log_dir / "daemon.log"
    return daemon


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def _assert_refused_for_space(daemon: DaemonProcess, repo: Path) -> None:
    with pytest.raises(grpc.RpcError) as err:
        daemon.submit(repo)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "min_free_space" in (err.value.details() or "")
    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    retry = error_details_pb2.RetryInfo.DESCRIPTOR
    assert status is not None and any(detail.Is(retry) for detail in status.details)


def _assert_serving_reads(daemon: DaemonProcess, run_id: str) -> None:
    health = health_pb2_grpc.HealthStub(daemon.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=5).id == run_id
    listed = daemon.stub.ListRuns(runs_pb2.ListRunsRequest(), timeout=5)
    assert run_id in [r.id for r in listed.runs]


def test_a_full_disk_fails_the_stage_refuses_runs_and_recovers_when_space_returns(
    small_disk: SmallDisk, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    flood = pipeline_repo(FLOOD)
    quick = pipeline_repo(QUICK)
    daemon = _daemon(small_disk, tmp_path).start()
    try:
        filler = small_disk.fill("filler", 2 * MiB)
        run = daemon.submit(flood.path)
        # The stage's output fills the disk.
        _wait_until(lambda: small_disk.free() < FLOOR_MIB * MiB, "the disk is full")
        assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon runs on"
        _assert_serving_reads(daemon, run.id)
        assert len(daemon.logs(run.id, "big")) > MiB, "the log so far is readable"
        _assert_refused_for_space(daemon, quick.path)

        filler.unlink()  # an operator frees space
        final = daemon.wait(run.id)
        assert final.status == runs_pb2.RUN_STATUS_FAILED
        big = stage(final, "big")
        assert big.status == runs_pb2.STAGE_STATUS_FAILED
        assert "no space left on device" in big.reason
        assert stage(final, "after").status == runs_pb2.STAGE_STATUS_SKIPPED

        # Taken again without a restart, once the floor is met.
        _wait_until(lambda: small_disk.free() >= FLOOR_MIB * MiB, "space is back")
        again = daemon.wait(daemon.submit(quick.path).id)
        assert again.status == runs_pb2.RUN_STATUS_SUCCEEDED
        assert b"space-is-back" in daemon.logs(again.id, "s")
    finally:
        assert daemon.stop() == 0, daemon.log_path.read_text()


def test_the_daemon_starts_on_a_full_disk_and_takes_runs_once_space_returns(
    small_disk: SmallDisk, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    slow = pipeline_repo("name: slow\nstages:\n  s:\n    run: sleep 60\n")
    quick = pipeline_repo(QUICK)
    daemon = _daemon(small_disk, tmp_path)
    daemon.args += ["--max-concurrent-runs", "1"]
    daemon.start()
    running = daemon.submit(slow.path)
    daemon.wait_for_stage(running.id, "s")
    queued = daemon.submit(quick.path)
    # A crash leaves a run to recover; a clean stop leaves no -wal/-shm
    # files: the next start-up needs to write in both cases.
    daemon.stop(signal.SIGKILL)
    filler = small_disk.fill("filler")
    assert small_disk.free() == 0

    restarted = _daemon(small_disk, tmp_path).start()
    try:
        _assert_serving_reads(restarted, queued.id)
        _assert_refused_for_space(restarted, quick.path)
        filler.unlink()
        recovered = restarted.wait(running.id)
        assert recovered.status == runs_pb2.RUN_STATUS_INTERRUPTED
        assert restarted.wait(queued.id).status == runs_pb2.RUN_STATUS_SUCCEEDED
        assert restarted.stop() == 0, "a clean stop"

        small_disk.fill("filler")
        assert small_disk.free() == 0
        restarted.start()
        _assert_serving_reads(restarted, queued.id)
        _assert_refused_for_space(restarted, quick.path)
        filler.unlink()
        again = restarted.wait(restarted.submit(quick.path).id)
        assert again.status == runs_pb2.RUN_STATUS_SUCCEEDED
        # Back to the usual connections: other processes (backups) can read.
        with closing(sqlite3.connect(restarted.home / "conveyor.db", timeout=5)) as backup:
            assert backup.execute("SELECT count(*) FROM runs").fetchone()[0] == 3
    finally:
        assert restarted.stop() == 0, restarted.log_path.read_text()
        shutil.rmtree(small_disk.root / "home", ignore_errors=True)


def test_a_shutdown_on_a_full_disk_gives_up_waiting_writes_and_the_restart_recovers_them(
    small_disk: SmallDisk, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    flood = pipeline_repo(FLOOD)
    daemon = _daemon(small_disk, tmp_path)
    daemon.args += ["--shutdown-timeout", "1"]
    daemon.start()
    filler = small_disk.fill("filler", 2 * MiB)
    run = daemon.submit(flood.path)
    # The stage's failure cannot be recorded: the write waits for space.
    _wait_until(
        lambda: "waiting for free space" in daemon.log_path.read_text(), "a state write waits"
    )
    assert daemon.stop() == 0, "SIGTERM: the held write gives up at the grace deadline"

    filler.unlink()
    restarted = _daemon(small_disk, tmp_path).start()
    try:
        final = restarted.wait(run.id)
        assert final.status == runs_pb2.RUN_STATUS_INTERRUPTED
        assert stage(final, "big").status == runs_pb2.STAGE_STATUS_INTERRUPTED
    finally:
        assert restarted.stop() == 0
