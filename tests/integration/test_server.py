"""The server's moving parts: listeners, health checking, reflection, shutdown."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conveyor.v1 import runs_pb2, server_pb2, service_pb2_grpc
from tests.support.daemon import DaemonProcess, bearer
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
        # the unix socket knows its caller; TCP needs a token
        token = bearer(daemon.issue_token())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "conveyor.v1.ConveyorService"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                timeout=5,
                metadata=token,
            )
            names = {s.name for r in responses for s in r.list_services_response.service}
            assert {"conveyor.v1.ConveyorService", "grpc.health.v1.Health"} <= names
            stub = service_pb2_grpc.ConveyorServiceStub(channel)
            repo = pipeline_repo("name: tcp\nstages:\n  s:\n    run: 'true'\n")
            request = runs_pb2.SubmitRunRequest(repository=str(repo.path), ref="main")
            with pytest.raises(grpc.RpcError) as refused:
                stub.SubmitRun(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            run = stub.SubmitRun(request, metadata=token)
            assert daemon.wait(run.run.id).status == runs_pb2.RUN_STATUS_SUCCEEDED
            status = stub.GetServerStatus(server_pb2.GetServerStatusRequest(), metadata=token)
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


def _reflect_v1(
    channel: grpc.Channel, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    """Ask ``grpc.reflection.v1``: the same messages as v1alpha under another
    package, so v1alpha's classes encode them."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=5))


def test_reflection_v1_lists_and_describes_the_services(daemon: DaemonProcess) -> None:
    assert daemon.channel is not None
    listing, described, itself = _reflect_v1(
        daemon.channel,
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="conveyor.v1.ConveyorService"
        ),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        ),
    )
    names = {s.name for s in listing.list_services_response.service}
    assert names == {
        "conveyor.v1.ConveyorService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    service = next(f for f in files if f.name == "conveyor/v1/service.proto").service[0]
    assert "CancelRun" in {m.name for m in service.method}
    (v1,) = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in itself.file_descriptor_response.file_descriptor_proto
    ]
    assert v1.package == "grpc.reflection.v1" and v1.service[0].name == "ServerReflection"
