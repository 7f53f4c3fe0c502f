"""Authentication and authorization overhead per unary call.

Two daemons in one run: one with authentication on (the default), one with
``--no-auth``, each listening on its unix socket and on a loopback TCP port.
The same call (GetServerStatus: no database work, so the figure is the
access check and the transport) is timed sequentially on four paths, in
interleaved batches so that drift of the machine hits every path alike:

- *peer uid*: the unix socket with auth on: the daemon's relay reads the
  peer's uid and forwards the bytes to gRPC; versus the unix socket with
  auth off (gRPC listening there directly);
- *token*: TCP with a bearer token, auth on; versus TCP, auth off.

The overhead of a path is the difference of the medians (ms per call). A
GetRun (a database read) is timed the same way on the token path. The
relay's throughput is measured too: a non-follow StreamLogs of a finished
64 MB log over the unix socket, auth on versus off.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import grpc

from bench.common import (
    MB,
    BenchResult,
    Figure,
    describe,
    pipeline_repo,
    scratch_dir,
    submit,
    wait_finished,
)
from conveyor.v1 import runs_pb2, server_pb2, service_pb2_grpc
from tests.support.daemon import DaemonProcess, bearer
from tests.support.ports import free_port

NAME = "auth"
TARGET_MS = 0.2
LOG_BYTES = 64 * MB
WARMUP = 200

Call = Callable[[], object]


def _daemon(home: Any, port: int, *extra: str) -> DaemonProcess:
    return DaemonProcess(
        home,
        args=["--listen", f"unix://{home}/conveyord.sock", "--listen", f"127.0.0.1:{port}", *extra],
    ).start()


def _timed(call: Call, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


def _read_log(stub: service_pb2_grpc.ConveyorServiceStub, run_id: str) -> float:
    """MB/s of one non-follow StreamLogs of the whole log."""
    t0 = time.perf_counter()
    total = 0
    for chunk in stub.StreamLogs(
        runs_pb2.StreamLogsRequest(run_id=run_id, stage="big"), timeout=120
    ):
        total += len(chunk.data)
    seconds = time.perf_counter() - t0
    if total < LOG_BYTES:
        raise RuntimeError(f"read {total} bytes of a {LOG_BYTES} byte log")
    return total / MB / seconds


def run(quick: bool) -> BenchResult:
    rounds = 10 if quick else 40
    batch = 100 if quick else 250
    reads = 3 if quick else 5
    samples: dict[str, list[float]] = {
        key: []
        for key in (
            "unix_auth_off",
            "unix_peer_uid",
            "tcp_auth_off",
            "tcp_token",
            "getrun_tcp_auth_off",
            "getrun_tcp_token",
        )
    }
    throughput: dict[str, list[float]] = {"relay_on": [], "relay_off": []}
    with scratch_dir() as root:
        port_on, port_off = free_port(), free_port()
        on = _daemon(root / "on", port_on)
        off = _daemon(root / "off", port_off, "--no-auth")
        channels: list[grpc.Channel] = []
        try:
            token = bearer(on.issue_token(identity="bench", roles=("viewer",)))
            repo = pipeline_repo(
                root / "repo",
                "authbench",
                {"big": {"run": f"head -c {LOG_BYTES} /dev/zero | tr '\\0' x"}},
            )
            run_ids = {}
            for name, daemon in (("on", on), ("off", off)):
                run_ids[name] = submit(daemon, repo).id
                wait_finished(daemon, run_ids[name])

            def stub(address: str) -> service_pb2_grpc.ConveyorServiceStub:
                channel = grpc.insecure_channel(address)
                channels.append(channel)
                return service_pb2_grpc.ConveyorServiceStub(channel)

            unix_on, unix_off = stub(on.address), stub(off.address)
            tcp_on, tcp_off = stub(f"127.0.0.1:{port_on}"), stub(f"127.0.0.1:{port_off}")
            status = server_pb2.GetServerStatusRequest()
            get_on = runs_pb2.GetRunRequest(run_id=run_ids["on"])
            get_off = runs_pb2.GetRunRequest(run_id=run_ids["off"])
            paths: dict[str, Call] = {
                "unix_auth_off": lambda: unix_off.GetServerStatus(status, timeout=10),
                "unix_peer_uid": lambda: unix_on.GetServerStatus(status, timeout=10),
                "tcp_auth_off": lambda: tcp_off.GetServerStatus(status, timeout=10),
                "tcp_token": lambda: tcp_on.GetServerStatus(status, timeout=10, metadata=token),
                "getrun_tcp_auth_off": lambda: tcp_off.GetRun(get_off, timeout=10),
                "getrun_tcp_token": lambda: tcp_on.GetRun(get_on, timeout=10, metadata=token),
            }
            for call in paths.values():
                _timed(call, WARMUP)
            order = list(paths)
            for index in range(rounds):
                for key in order if index % 2 == 0 else reversed(order):
                    samples[key] += _timed(paths[key], batch)
            for index in range(reads):
                pair = [
                    ("relay_on", unix_on, run_ids["on"]),
                    ("relay_off", unix_off, run_ids["off"]),
                ]
                for key, target, run_id in pair if index % 2 == 0 else reversed(pair):
                    throughput[key].append(_read_log(target, run_id))
        finally:
            for channel in channels:
                channel.close()
            on.stop()
            off.stop()

    stats = {key: describe(values, scale=1000) for key, values in samples.items()}

    def p50(key: str) -> float:
        return stats[key]["p50"]

    peer_uid = p50("unix_peer_uid") - p50("unix_auth_off")
    token_path = p50("tcp_token") - p50("tcp_auth_off")
    relay_on = statistics.median(throughput["relay_on"])
    relay_off = statistics.median(throughput["relay_off"])
    figures = [
        Figure(
            "auth overhead per call, peer-uid path (unix socket relay)",
            peer_uid,
            "ms",
            TARGET_MS,
            note="p50 GetServerStatus, unix socket: auth on - auth off",
        ),
        Figure(
            "auth overhead per call, token path (TCP)",
            token_path,
            "ms",
            TARGET_MS,
            note="p50 GetServerStatus, TCP loopback: bearer token, auth on - auth off",
        ),
        Figure(
            "GetServerStatus p50, unix socket, auth on (peer uid)",
            p50("unix_peer_uid"),
            "ms",
            baseline=p50("unix_auth_off"),
            baseline_name="auth off",
        ),
        Figure(
            "GetServerStatus p50, TCP, auth on (token)",
            p50("tcp_token"),
            "ms",
            baseline=p50("tcp_auth_off"),
            baseline_name="auth off",
        ),
        Figure("GetServerStatus p50, unix socket, auth off", p50("unix_auth_off"), "ms"),
        Figure("GetServerStatus p50, TCP, auth off", p50("tcp_auth_off"), "ms"),
        Figure(
            "GetServerStatus p90, unix socket, auth on - off",
            stats["unix_peer_uid"]["p90"] - stats["unix_auth_off"]["p90"],
            "ms",
        ),
        Figure(
            "GetServerStatus p90, TCP token, auth on - off",
            stats["tcp_token"]["p90"] - stats["tcp_auth_off"]["p90"],
            "ms",
        ),
        Figure(
            "auth overhead per call, GetRun, token path (TCP)",
            p50("getrun_tcp_token") - p50("getrun_tcp_auth_off"),
            "ms",
            headline=True,
        ),
        Figure(
            "StreamLogs of a finished 64 MB log, unix socket, auth on (relay)",
            relay_on,
            "MB/s",
            baseline=relay_off,
            baseline_name="auth off",
            higher_is_better=True,
        ),
        Figure("StreamLogs of a finished 64 MB log, unix socket, auth off", relay_off, "MB/s"),
    ]
    return BenchResult(
        NAME,
        figures,
        parameters={"rounds": rounds, "calls_per_batch": batch, "log_reads": reads},
        samples={"units": "ms", "per_path_stats_ms": stats, "throughput_mb_s": throughput},
        summary={
            "peer_uid_overhead_ms": peer_uid,
            "token_overhead_ms": token_path,
            "target_ms": TARGET_MS,
            "target_met": peer_uid <= TARGET_MS and token_path <= TARGET_MS,
        },
    )
