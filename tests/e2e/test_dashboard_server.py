"""The dashboard's listener in a real daemon, over plain HTTP (no browser):
off unless asked for, loopback only, run URLs in spans that are its pages,
and a shutdown that ends its live streams."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from conveyor.v1 import auth_pb2, runs_pb2, server_pb2
from tests.support import browser as b
from tests.support.daemon import DaemonProcess
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.repos import GitRepo

DAEMON = [sys.executable, "-m", "conveyor.daemon.main"]


def _status(daemon: DaemonProcess) -> server_pb2.GetServerStatusResponse:
    return daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest(), timeout=10)


def test_the_dashboard_is_off_unless_asked_for(daemon: DaemonProcess) -> None:
    assert _status(daemon).web_url == ""
    with pytest.raises(grpc.RpcError) as refused:
        daemon.stub.CreateWebLogin(auth_pb2.CreateWebLoginRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "web_listen" in str(refused.value.details())


def test_only_a_loopback_address_is_accepted(daemon_home: Path) -> None:
    # each refused address: tests/unit/test_config.py
    result = subprocess.run(
        [*DAEMON, "--home", str(daemon_home), "--web-listen", "0.0.0.0:7480"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "conveyord: configuration error: web_listen: invalid value" in result.stderr
    assert "loopback IP only" in result.stderr


def test_a_port_in_use_stops_the_start_saying_so(daemon_home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*DAEMON, "--home", str(daemon_home), "--web-listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"WebListenError: cannot listen on 127.0.0.1:{port} (web_listen)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _get(base: str, path: str, cookie: str) -> tuple[int, str]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers={"cookie": cookie})
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def test_spans_link_runs_and_stages_to_their_pages(
    daemon_home: Path,
    receiver: OtlpReceiver,
    pipeline_repo: Callable[[str], GitRepo],
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    daemon = DaemonProcess(daemon_home, args=["--web-listen", "127.0.0.1:0"], env=env).start()
    try:
        base = _status(daemon).web_url
        assert base.startswith("http://127.0.0.1:") and not base.endswith(":0")
        repo = pipeline_repo("name: linked\nstages:\n  build:\n    run: echo built\n")
        run = daemon.wait(daemon.submit(repo.path).id)

        def complete(spans: list[ReceivedSpan]) -> bool:
            mine = [s for s in spans if s.attributes.get("cicd.pipeline.run.id") == run.id]
            return len(mine) >= 2

        spans = receiver.wait_for(complete)
        by_name = {s.name: s for s in spans if s.attributes.get("cicd.pipeline.run.id") == run.id}
        root, stage = by_name["RUN linked"], by_name["run build"]
        assert root.attributes["cicd.pipeline.run.url.full"] == f"{base}/runs/{run.id}"
        assert root.resource["cicd.worker.url.full"] == base
        stage_url = stage.attributes["cicd.pipeline.task.run.url.full"]
        assert stage_url == f"{base}/runs/{run.id}/stages/build"
        cookie = b.session_cookie(base, daemon.issue_token("reader", ("viewer",)))
        for url, text in ((f"{base}/runs/{run.id}", "linked"), (stage_url, "echo built")):
            status, page = _get(base, url.removeprefix(base), cookie)
            assert status == 200 and text in page
    finally:
        daemon.stop()


def test_stopping_the_daemon_ends_the_live_streams(
    daemon_home: Path, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    daemon, base = b.web_daemon(daemon_home)
    repo = pipeline_repo(
        f"name: held\nstages:\n  wait:\n    run: echo waiting; while [ ! -f {tmp_path}/go ];"
        " do sleep 0.05; done\n"
    )
    run = daemon.submit(repo.path)
    daemon.wait_for_stage(run.id, "wait", runs_pb2.STAGE_STATUS_RUNNING)
    cookie = b.session_cookie(base, daemon.issue_token("reader", ("viewer",)))
    host, port = base.removeprefix("http://").rsplit(":", 1)
    streams = []
    for path in (f"/runs/{run.id}/live?after=0", f"/runs/{run.id}/stages/wait/log", "/live/runs"):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", path, headers={"cookie": cookie, "accept": "text/event-stream"})
        answer = connection.getresponse()
        assert answer.status == 200
        assert answer.getheader("content-type", "").startswith("text/event-stream")
        assert answer.readline().startswith((b"id: ", b"event: "))  # an event came
        streams.append((connection, answer))
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 15
    for connection, answer in streams:
        answer.read()  # ends: the daemon closed the stream
        connection.close()
    log = daemon.log_path.read_text()
    assert "Traceback" not in log and "conveyord stopped" in log
