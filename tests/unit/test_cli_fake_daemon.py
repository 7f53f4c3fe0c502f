"""The CLI against an in-process fake of the daemon's gRPC API (no real daemon)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from conveyor.client.cli import main
from conveyor.v1 import pipelines_pb2, runs_pb2, server_pb2, service_pb2_grpc

T0 = 1_700_000_000
LOGS = {"build": b"compiling\nlinking\n", "test": b"".join(b"line %d\n" % i for i in range(50))}


def ts(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def finished_run() -> runs_pb2.Run:
    return runs_pb2.Run(
        id="r-1",
        number=3,
        pipeline="ci",
        repository="/srv/app.git",
        ref="main",
        commit="c0ffee" * 6 + "c0ff",
        status=runs_pb2.RUN_STATUS_FAILED,
        created_at=ts(T0),
        started_at=ts(T0 + 1),
        finished_at=ts(T0 + 9),
        last_event_seq=5,
        stages=[
            runs_pb2.Stage(
                name="build",
                status=runs_pb2.STAGE_STATUS_SUCCEEDED,
                attempt=1,
                exit_code=0,
                started_at=ts(T0 + 1),
                finished_at=ts(T0 + 3),
                log_size=len(LOGS["build"]),
            ),
            runs_pb2.Stage(
                name="test",
                needs=["build"],
                status=runs_pb2.STAGE_STATUS_FAILED,
                attempt=1,
                exit_code=1,
                started_at=ts(T0 + 3),
                finished_at=ts(T0 + 9),
                reason="exit code 1",
                log_size=len(LOGS["test"]),
            ),
        ],
    )


def events() -> list[runs_pb2.RunEvent]:
    k, s = runs_pb2, runs_pb2
    return [
        k.RunEvent(seq=1, time=ts(T0 + 1), kind=k.RUN_EVENT_KIND_RUN_STATUS,
                   run_status=s.RUN_STATUS_RUNNING),
        k.RunEvent(seq=2, time=ts(T0 + 1), kind=k.RUN_EVENT_KIND_STAGE_STATUS, stage="build",
                   stage_status=s.STAGE_STATUS_RUNNING, attempt=1),
        k.RunEvent(seq=3, time=ts(T0 + 3), kind=k.RUN_EVENT_KIND_STAGE_STATUS, stage="build",
                   stage_status=s.STAGE_STATUS_SUCCEEDED, attempt=1, exit_code=0),
        k.RunEvent(seq=4, time=ts(T0 + 9), kind=k.RUN_EVENT_KIND_STAGE_STATUS, stage="test",
                   stage_status=s.STAGE_STATUS_FAILED, attempt=1, exit_code=1,
                   message="exit code 1"),
        k.RunEvent(seq=5, time=ts(T0 + 9), kind=k.RUN_EVENT_KIND_RUN_STATUS,
                   run_status=s.RUN_STATUS_FAILED),
    ]  # fmt: skip


class FakeDaemon(service_pb2_grpc.ConveyorServiceServicer):
    def __init__(self) -> None:
        self.submitted: list[runs_pb2.SubmitRunRequest] = []
        self.listed: list[runs_pb2.ListRunsRequest] = []
        self.log_requests: list[runs_pb2.StreamLogsRequest] = []
        self.break_logs_once = False

    def _run(self, run_id: str, context: grpc.ServicerContext) -> runs_pb2.Run:
        if run_id != "r-1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"run {run_id!r} not found")
        return finished_run()

    def SubmitRun(
        self, request: runs_pb2.SubmitRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.SubmitRunResponse:
        self.submitted.append(request)
        return runs_pb2.SubmitRunResponse(run=finished_run(), created=True)

    def GetRun(
        self, request: runs_pb2.GetRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.Run:
        return self._run(request.run_id, context)

    def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        self.listed.append(request)
        return runs_pb2.ListRunsResponse(runs=[finished_run()], next_page_token="page-2")

    def WatchRun(
        self, request: runs_pb2.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[runs_pb2.RunEvent]:
        self._run(request.run_id, context)
        for event in events():
            if event.seq > request.after_seq:
                event.run_id = request.run_id
                yield event

    def StreamLogs(
        self, request: runs_pb2.StreamLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[runs_pb2.LogChunk]:
        self.log_requests.append(request)
        self._run(request.run_id, context)
        data = LOGS[request.stage]
        offset = request.offset
        while offset < len(data):
            chunk = data[offset : offset + 64]
            yield runs_pb2.LogChunk(stage=request.stage, offset=offset, data=chunk)
            offset += len(chunk)
            if self.break_logs_once:
                self.break_logs_once = False
                context.abort(grpc.StatusCode.UNAVAILABLE, "daemon restarting")

    def CancelRun(
        self, request: runs_pb2.CancelRunRequest, context: grpc.ServicerContext
    ) -> runs_pb2.CancelRunResponse:
        self._run(request.run_id, context)
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "run r-1 already finished (failed)")

    def ValidatePipeline(
        self, request: pipelines_pb2.ValidatePipelineRequest, context: grpc.ServicerContext
    ) -> pipelines_pb2.ValidatePipelineResponse:
        if "bad" in request.content:
            diagnostic = pipelines_pb2.Diagnostic(
                file=request.file, line=2, column=3, path="stages", message="bad stage"
            )
            return pipelines_pb2.ValidatePipelineResponse(valid=False, diagnostics=[diagnostic])
        return pipelines_pb2.ValidatePipelineResponse(
            valid=True, stage_order=["build", "test"], pipeline_name="ci"
        )

    def ListPlugins(
        self, request: server_pb2.ListPluginsRequest, context: grpc.ServicerContext
    ) -> server_pb2.ListPluginsResponse:
        plugin = server_pb2.Plugin(
            name="run",
            distribution="conveyor-plugins",
            version="0.1.0",
            provides=["stage kind: run"],
        )
        return server_pb2.ListPluginsResponse(plugins=[plugin])

    def GetServerStatus(
        self, request: server_pb2.GetServerStatusRequest, context: grpc.ServicerContext
    ) -> server_pb2.GetServerStatusResponse:
        return server_pb2.GetServerStatusResponse(
            version="0.1.0", started_at=ts(T0), queued_runs=1, active_runs=2, max_concurrent_runs=4
        )


@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    folder = tempfile.mkdtemp(prefix="cvy")  # unix socket paths must stay short
    address = f"unix://{folder}/d.sock"
    fake = FakeDaemon()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    service_pb2_grpc.add_ConveyorServiceServicer_to_server(fake, server)
    server.add_insecure_port(address)
    server.start()
    monkeypatch.setenv("CONVEYOR_ADDRESS", address)
    monkeypatch.setenv("CONVEYOR_CONNECT_TIMEOUT", "5")
    try:
        yield fake
    finally:
        server.stop(None)
        shutil.rmtree(folder, ignore_errors=True)


def test_runs_table_and_filters(
    fake_daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "--status", "failed", "--limit", "5", "--pipeline", "ci"]) == 0
    out, err = capsys.readouterr()
    header, row = out.splitlines()
    assert header.startswith("ID")
    assert row.split()[:6] == ["r-1", "#3", "ci", "failed", "main", "c0ffeec0ff"]
    assert err == "more runs: --page-token page-2\n"
    request = fake_daemon.listed[0]
    assert (request.status, request.page_size, request.pipeline) == (
        runs_pb2.RUN_STATUS_FAILED,
        5,
        "ci",
    )


def test_runs_json(fake_daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--output", "json", "runs"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [run["id"] for run in data] == ["r-1"]
    assert data[0]["last_event_seq"] == 5


def test_show(fake_daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "r-1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run r-1  #3 ci\n")
    assert any(line.split()[:4] == ["test", "failed", "1", "1"] for line in out.splitlines())
    assert main(["show", "r-1", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["stages"][1]["reason"] == "exit code 1"


def test_daemon_errors_pass_through(
    fake_daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", "nope"]) == 1
    assert capsys.readouterr().err == "conveyor: error: run 'nope' not found\n"
    assert main(["cancel", "r-1", "--reason", "x"]) == 1
    assert capsys.readouterr().err == "conveyor: error: run r-1 already finished (failed)\n"


def test_watch_prints_events_and_summary(
    fake_daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["watch", "r-1"]) == 1  # the run failed
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "watching run r-1 #3 ci (stages: build, test)"
    assert [line.split(" ", 1)[1] for line in lines[1:6]] == [
        "run running",
        "build running (attempt 1)",
        "build succeeded (attempt 1, exit 0) in 2.0s",
        "test failed (attempt 1, exit 1) in 6.0s: exit code 1",
        "run failed in 8.0s",
    ]
    assert lines[6] == "run r-1 #3 ci failed in 8.0s"
    assert lines[7].split() == ["build", "succeeded", "2.0s"]
    assert lines[8].split() == ["test", "failed", "6.0s", "exit", "code", "1"]


def test_logs_of_all_stages(
    fake_daemon: FakeDaemon, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["logs", "r-1"]) == 0
    out = capsysbinary.readouterr().out
    assert out == b"==> stage build <==\n" + LOGS["build"] + b"==> stage test <==\n" + LOGS["test"]


def test_logs_resume_after_the_daemon_drops(
    fake_daemon: FakeDaemon, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    fake_daemon.break_logs_once = True
    assert main(["logs", "r-1", "test", "--follow"]) == 0
    assert capsysbinary.readouterr().out == LOGS["test"]
    assert [(r.offset, r.follow) for r in fake_daemon.log_requests] == [(0, True), (64, True)]


def test_logs_of_an_unknown_stage(
    fake_daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "r-1", "deploy"]) == 1
    assert "has no stage 'deploy' (stages: build, test)" in capsys.readouterr().err


def test_validate(
    fake_daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: ci\n")
    assert main(["validate", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: valid (2 stages: build, test)\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\n")
    assert main(["validate", str(bad)]) == 1
    assert capsys.readouterr().out == f"{bad}:2:3: stages: bad stage\n"
    assert main(["validate", str(bad), "-o", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["valid"] is False


def test_plugins_and_status(fake_daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    assert "stage kind: run" in capsys.readouterr().out
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("conveyord 0.1.0 at unix://")
    assert "1 queued, 2 active (max 4)" in out


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_submit_from_a_checkout(
    fake_daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    git(tmp_path, "init", "-q", "-b", "feature")
    (tmp_path / "conveyor.yaml").write_text("name: ci\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    (tmp_path / "conveyor.yaml").write_text("name: changed\n")
    monkeypatch.chdir(tmp_path)
    assert main(["submit", "--idempotency-key", "k1", "--file", "conveyor.yaml"]) == 0
    out, err = capsys.readouterr()
    head = git(tmp_path, "rev-parse", "HEAD")
    assert out == "run r-1 #3 ci submitted: main at commit c0ffeec0ff\n"
    assert err == (
        f"conveyor: warning: runs commit {head[:10]}; uncommitted changes are not included\n"
    )
    request = fake_daemon.submitted[0]
    assert (request.repository, request.ref, request.commit) == (
        str(tmp_path.resolve()),
        "feature",
        head,
    )
    assert request.trigger == runs_pb2.TRIGGER_KIND_MANUAL
    assert (request.idempotency_key, request.pipeline_path) == ("k1", "conveyor.yaml")

    assert main(["submit", "--ref", "main", "--trigger", "api", "--watch"]) == 1
    assert "run r-1 #3 ci failed in 8.0s" in capsys.readouterr().out
    assert (fake_daemon.submitted[1].ref, fake_daemon.submitted[1].commit) == ("main", "")
    assert fake_daemon.submitted[1].trigger == runs_pb2.TRIGGER_KIND_API
