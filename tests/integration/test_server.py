"""The server's moving parts: listeners, health checking, reflection, shutdown."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conveyor.v1 import runs_pb2, server_pb2, service_pb2_grpc
from tests.support.daemon import DaemonProcess
from tests.support.repos import GitRepo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serves_on_a_unix_socket_and_loopback_tcp_with_health_and_reflection(
    daemon_home: Path, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    port = _free_port()
    daemon = DaemonProcess(
        daemon_home,
        args=[
            "--listen",
            f"unix://{daemon_home / 'conveyord.sock'}",
            "--listen",
            f"127.0.0.1:{port}",
        ],
    ).start()
    try:
        assert daemon.socket.stat().st_mode & 0o777 == 0o600, "only the owner may connect"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "conveyor.v1.ConveyorService"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = {s.name for r in responses for s in r.list_services_response.service}
            assert {"conveyor.v1.ConveyorService", "grpc.health.v1.Health"} <= names
            stub = service_pb2_grpc.ConveyorServiceStub(channel)
            repo = pipeline_repo("name: tcp\nstages:\n  s:\n    run: 'true'\n")
            run = stub.SubmitRun(runs_pb2.SubmitRunRequest(repository=str(repo.path), ref="main"))
            assert daemon.wait(run.run.id).status == runs_pb2.RUN_STATUS_SUCCEEDED
            status = stub.GetServerStatus(server_pb2.GetServerStatusRequest())
            assert status.version and status.max_concurrent_runs == 16
    finally:
        assert daemon.stop() == 0, "SIGTERM is a clean shutdown"
    assert not daemon.socket.exists(), "the socket is removed on shutdown"


def test_configuration_file_environment_and_flags_layer(daemon_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "conveyord.toml"
    config.write_text("max_concurrent_runs = 3\nkill_grace = 2.5\n")
    daemon = DaemonProcess(
        daemon_home,
        args=["--config", str(config), "--max-concurrent-runs", "5"],
        env={"CONVEYOR_MAX_CONCURRENT_RUNS": "4"},
    ).start()
    try:
        status = daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest())
        assert status.max_concurrent_runs == 5, "a flag beats environment and file"
    finally:
        daemon.stop()
    daemon = DaemonProcess(
        daemon_home, args=["--config", str(config)], env={"CONVEYOR_MAX_CONCURRENT_RUNS": "4"}
    ).start()
    try:
        status = daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest())
        assert status.max_concurrent_runs == 4, "the environment beats the file"
    finally:
        daemon.stop()


def test_a_bad_configuration_is_refused_with_a_message(daemon_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "conveyord.toml"
    config.write_text("max_concurent_runs = 3\n")
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor.daemon.main",
            "--home",
            str(daemon_home),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown setting 'max_concurent_runs'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_daemon_on_the_same_home_is_refused(daemon: DaemonProcess) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "conveyor.daemon.main", "--home", str(daemon.home)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"another conveyord (pid {daemon.proc.pid if daemon.proc else '?'})" in result.stderr
    assert daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest()).version


def test_listening_beyond_loopback_is_refused(daemon_home: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor.daemon.main",
            "--home",
            str(daemon_home),
            "--listen",
            "0.0.0.0:7474",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "only loopback addresses are allowed" in result.stderr
