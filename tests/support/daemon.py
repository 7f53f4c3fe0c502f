"""Start a real ``conveyord`` as a subprocess and talk to it over gRPC.

Used by the integration tests, the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.v1 import auth_pb2, runs_pb2, service_pb2_grpc

FINISHED = {
    runs_pb2.RUN_STATUS_SUCCEEDED,
    runs_pb2.RUN_STATUS_FAILED,
    runs_pb2.RUN_STATUS_CANCELLED,
    runs_pb2.RUN_STATUS_TIMED_OUT,
    runs_pb2.RUN_STATUS_INTERRUPTED,
}


@dataclass
class DaemonProcess:
    """A daemon in its own home folder, listening on a unix socket there."""

    home: Path
    args: list[str] = field(default_factory=list)
    env: Mapping[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None

    @property
    def socket(self) -> Path:
        return self.home / "conveyord.sock"

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> Path:
        return self.home / "daemon.log"

    def start(self, timeout: float = 20.0) -> DaemonProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CONVEYOR_HOME": str(self.home), **self.env}
        env.pop("CONVEYOR_ADDRESS", None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "conveyor.daemon.main",
                    "--home",
                    str(self.home),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.channel = grpc.insecure_channel(self.address)
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"conveyord exited at start-up:\n{self.log_path.read_text()}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return self
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"conveyord did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    @property
    def stub(self) -> service_pb2_grpc.ConveyorServiceStub:
        assert self.channel is not None, "daemon not started"
        return service_pb2_grpc.ConveyorServiceStub(self.channel)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the daemon and wait for it to exit; returns its exit code."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(signal.SIGKILL)

    def submit(self, repo: Path, ref: str = "main", **fields: object) -> runs_pb2.Run:
        reply = self.stub.SubmitRun(
            runs_pb2.SubmitRunRequest(repository=str(repo), ref=ref, **fields),  # type: ignore[arg-type]
            timeout=30,
        )
        return reply.run

    def events(
        self, run_id: str, after_seq: int = 0, timeout: float = 60
    ) -> Iterator[runs_pb2.RunEvent]:
        yield from self.stub.WatchRun(
            runs_pb2.WatchRunRequest(run_id=run_id, after_seq=after_seq), timeout=timeout
        )

    def wait(self, run_id: str, timeout: float = 60) -> runs_pb2.Run:
        """Follow the run's events until it ends; return the final run."""
        for _ in self.events(run_id, timeout=timeout):
            pass
        run = self.stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=10)
        assert run.status in FINISHED, f"run {run_id} still {run.status} after its events ended"
        return run

    def wait_for_stage(
        self,
        run_id: str,
        stage: str,
        status: int = runs_pb2.STAGE_STATUS_RUNNING,
        timeout: float = 30,
    ) -> None:
        for event in self.events(run_id, timeout=timeout):
            if event.stage == stage and event.stage_status == status:
                return
        raise AssertionError(f"stage {stage} never reached {status}")

    def logs(self, run_id: str, stage: str, offset: int = 0, follow: bool = False) -> bytes:
        chunks = self.stub.StreamLogs(
            runs_pb2.StreamLogsRequest(run_id=run_id, stage=stage, offset=offset, follow=follow),
            timeout=60,
        )
        return b"".join(chunk.data for chunk in chunks)

    def issue_token(
        self,
        identity: str = "tester",
        roles: tuple[str, ...] = ("admin",),
        *,
        repositories: tuple[str, ...] = (),
        name: str = "test",
        expires_in_seconds: int = 0,
    ) -> str:
        """A new bearer token, issued over the unix socket (the daemon's own
        user is an admin there)."""
        reply = self.stub.IssueToken(
            auth_pb2.IssueTokenRequest(
                name=name,
                identity=identity,
                roles=list(roles),
                repositories=list(repositories),
                expires_in_seconds=expires_in_seconds,
            ),
            timeout=10,
        )
        return reply.secret


def bearer(token: str) -> tuple[tuple[str, str]]:
    """gRPC call metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


def stage(run: runs_pb2.Run, name: str) -> runs_pb2.Stage:
    for s in run.stages:
        if s.name == name:
            return s
    raise KeyError(name)
