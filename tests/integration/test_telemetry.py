"""Traces and metrics exported to a real OTLP/gRPC receiver."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.v1 import runs_pb2, server_pb2
from tests.support.daemon import DaemonProcess
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.repos import GitRepo, git

FAST_EXPORT = {
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "OTEL_METRIC_EXPORT_INTERVAL": "300",
}

PIPELINE = """
name: traced
stages:
  lint:
    run: echo "$TRACEPARENT" > {out}/lint.traceparent
  test:
    retries: {{max: 1, backoff: 0.1s}}
    run: echo testing; exit {test_exit}
  build:
    needs: [lint, test]
    run: echo building
"""


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def traced_daemon(daemon_home: Path, receiver: OtlpReceiver) -> Iterator[DaemonProcess]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **FAST_EXPORT}
    daemon = DaemonProcess(daemon_home, env=env).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _run_spans(spans: list[ReceivedSpan], run_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.attributes.get("cicd.pipeline.run.id") == run_id]


def _complete(run_id: str, count: int) -> Callable[[list[ReceivedSpan]], bool]:
    return lambda spans: len(_run_spans(spans, run_id)) >= count


def test_run_and_stage_spans_follow_the_cicd_conventions(
    traced_daemon: DaemonProcess,
    receiver: OtlpReceiver,
    pipeline_repo: Callable[[str], GitRepo],
    tmp_path: Path,
) -> None:
    repo = pipeline_repo(PIPELINE.format(out=tmp_path, test_exit=0))
    run = traced_daemon.wait(traced_daemon.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
    spans = _run_spans(receiver.wait_for(_complete(run.id, 4)), run.id)
    by_name = {s.name: s for s in spans}
    root = by_name["RUN traced"]
    assert root.kind == "SERVER" and root.parent_span_id == ""
    assert (root.trace_id, root.span_id) == (run.trace_id, run.span_id)
    assert root.resource["service.name"] == "conveyor"
    assert root.resource["service.version"]
    assert root.attributes["cicd.pipeline.name"] == "traced"
    assert root.attributes["cicd.pipeline.result"] == "success"
    assert root.attributes["cicd.pipeline.action.name"] == "RUN"
    assert root.attributes["vcs.repository.url.full"] == f"file://{repo.path}"
    assert root.attributes["vcs.ref.head.name"] == "main"
    assert root.attributes["vcs.ref.head.type"] == "branch"
    assert root.attributes["vcs.ref.head.revision"] == run.commit
    assert "error.type" not in root.attributes and not root.is_error
    host, home = socket.gethostname(), traced_daemon.home
    daemon_url = f"conveyor://{host.lower()}{home}"
    assert root.attributes["cicd.pipeline.run.url.full"] == f"{daemon_url}/runs/{run.id}"
    assert root.resource["cicd.worker.id"] == f"{host}:{home}"
    assert root.resource["cicd.worker.name"] == host
    assert root.resource["cicd.worker.url.full"] == daemon_url

    for name in ("lint", "test", "build"):
        span = by_name[f"run {name}"]
        assert span.kind == "INTERNAL"
        assert span.trace_id == root.trace_id and span.parent_span_id == root.span_id
        assert span.attributes["cicd.pipeline.task.name"] == name
        assert span.attributes["cicd.pipeline.task.run.id"] == f"{run.id}/{name}"
        assert span.attributes["cicd.pipeline.task.run.url.full"] == (
            f"{daemon_url}/runs/{run.id}/stages/{name}"
        )
        assert span.attributes["cicd.pipeline.task.type"] == "run"
        assert span.attributes["cicd.pipeline.task.run.result"] == "success"
        assert root.start_ns <= span.start_ns <= span.end_ns <= root.end_ns
    build, lint = by_name["run build"], by_name["run lint"]
    assert build.start_ns >= lint.end_ns, "stage timings show the DAG order"

    # the stage process saw its own span as its parent
    traceparent = (tmp_path / "lint.traceparent").read_text().strip()
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert (version, trace_id, parent_id) == ("00", root.trace_id, lint.span_id)
    assert int(flags, 16) & 1, "sampled"


def test_failures_retries_and_skips_are_on_the_spans(
    traced_daemon: DaemonProcess,
    receiver: OtlpReceiver,
    pipeline_repo: Callable[[str], GitRepo],
    tmp_path: Path,
) -> None:
    repo = pipeline_repo(PIPELINE.format(out=tmp_path, test_exit=3))
    run = traced_daemon.wait(traced_daemon.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_FAILED
    spans = _run_spans(receiver.wait_for(_complete(run.id, 4)), run.id)
    by_name = {s.name: s for s in spans}
    root, test, build = by_name["RUN traced"], by_name["run test"], by_name["run build"]
    assert root.attributes["cicd.pipeline.result"] == "failure"
    assert root.attributes["error.type"] == "stage_failure" and root.is_error
    assert test.attributes["cicd.pipeline.task.run.result"] == "failure"
    assert test.attributes["error.type"] == "exit_code" and test.is_error
    assert test.attributes["conveyor.task.exit_code"] == 3
    assert test.attributes["conveyor.task.attempts"] == 2
    retries = [attrs for name, attrs in test.events if name == "retry"]
    assert retries == [{"attempt": 1, "reason": "exit code 3", "delay_s": 0.1}]
    assert build.attributes["cicd.pipeline.task.run.result"] == "skip"
    assert build.parent_span_id == root.span_id


def test_cancellation_and_timeouts_are_results_not_errors(
    traced_daemon: DaemonProcess,
    receiver: OtlpReceiver,
    pipeline_repo: Callable[[str], GitRepo],
) -> None:
    repo = pipeline_repo(
        "name: stop\nstages:\n  slow:\n    run: sleep 30\n  quick:\n    timeout: 0.5s\n"
        "    run: sleep 30\n"
    )
    run = traced_daemon.submit(repo.path)
    traced_daemon.wait_for_stage(run.id, "quick", runs_pb2.STAGE_STATUS_TIMED_OUT)
    traced_daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="enough"))
    spans = _run_spans(receiver.wait_for(_complete(run.id, 3)), run.id)
    by_name = {s.name: s for s in spans}
    root = by_name["RUN stop"]
    assert root.attributes["cicd.pipeline.result"] == "cancellation"
    assert ("cancellation", {"reason": "enough"}) in root.events
    slow, quick = by_name["run slow"], by_name["run quick"]
    assert slow.attributes["cicd.pipeline.task.run.result"] == "cancellation"
    assert ("cancellation", {"reason": "enough"}) in slow.events
    assert quick.attributes["cicd.pipeline.task.run.result"] == "timeout"
    assert quick.attributes["error.type"] == "timeout"


def test_the_ref_type_is_known_for_hook_cli_and_short_tag_submits(
    traced_daemon: DaemonProcess,
    receiver: OtlpReceiver,
    pipeline_repo: Callable[[str], GitRepo],
) -> None:
    repo = pipeline_repo("name: refs\nstages:\n  s:\n    run: 'true'\n")
    commit = git("rev-parse", "HEAD", cwd=repo.path)
    git("tag", "-a", "-m", "release", "v1.0", cwd=repo.path)
    submits = {
        "hook, branch": {"ref": "refs/heads/main", "commit": commit},
        "hook, tag": {"ref": "refs/tags/v1.0", "commit": commit},
        "cli": {"ref": "main", "commit": commit},
        "short tag": {"ref": "v1.0"},
        "commit id": {"ref": commit},
    }
    runs = {what: traced_daemon.submit(repo.path, **fields) for what, fields in submits.items()}
    for run in runs.values():
        traced_daemon.wait(run.id)
    spans = receiver.wait_for(lambda spans: all(_run_spans(spans, r.id) for r in runs.values()))
    roots = {
        what: next(s for s in _run_spans(spans, run.id) if s.kind == "SERVER").attributes
        for what, run in runs.items()
    }
    seen = {
        what: (attrs["vcs.ref.head.name"], attrs.get("vcs.ref.head.type"))
        for what, attrs in roots.items()
    }
    assert seen == {
        "hook, branch": ("main", "branch"),
        "hook, tag": ("v1.0", "tag"),
        "cli": ("main", "branch"),
        "short tag": ("v1.0", "tag"),
        "commit id": (commit, None),
    }


def test_trace_context_sent_with_submit_becomes_the_parent(
    traced_daemon: DaemonProcess,
    receiver: OtlpReceiver,
    pipeline_repo: Callable[[str], GitRepo],
) -> None:
    repo = pipeline_repo("name: child\nstages:\n  s:\n    run: 'true'\n")
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    reply = traced_daemon.stub.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=str(repo.path), ref="main"),
        metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),),
    )
    assert reply.run.trace_id == trace_id
    traced_daemon.wait(reply.run.id)
    spans = _run_spans(receiver.wait_for(_complete(reply.run.id, 2)), reply.run.id)
    root = next(s for s in spans if s.kind == "SERVER")
    assert root.trace_id == trace_id and root.parent_span_id == parent_id


def test_run_and_stage_metrics_are_exported(
    traced_daemon: DaemonProcess,
    receiver: OtlpReceiver,
    pipeline_repo: Callable[[str], GitRepo],
    tmp_path: Path,
) -> None:
    repo = pipeline_repo(PIPELINE.format(out=tmp_path, test_exit=0))
    traced_daemon.wait(traced_daemon.submit(repo.path).id)
    wanted = {
        "cicd.pipeline.run.duration",
        "cicd.pipeline.run.active",
        "conveyor.pipeline.task.duration",
    }
    deadline = time.monotonic() + 20
    while not wanted <= receiver.metric_names and time.monotonic() < deadline:
        time.sleep(0.1)
    assert wanted <= receiver.metric_names


def test_an_unreachable_or_slow_receiver_never_slows_or_fails_pipelines(
    daemon_home: Path, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    slow = OtlpReceiver(delay=5).start()
    repo = pipeline_repo(
        "name: many\nstages:\n" + "".join(f"  s{i}:\n    run: 'true'\n" for i in range(12))
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": slow.endpoint,
        "OTEL_BSP_MAX_QUEUE_SIZE": "4",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
        "OTEL_METRICS_EXPORTER": "none",
        **FAST_EXPORT,
    }
    daemon = DaemonProcess(daemon_home, env=env, args=["--home", str(daemon_home)]).start()
    try:
        run = daemon.wait(daemon.submit(repo.path).id)
        assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
        assert slow.spans() == [], "the run finished while the receiver was still busy"
        status = daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest())
        assert status.trace_exporters == ["otlp"]
        assert status.spans_ended == 13
        assert status.spans_dropped > 0, "a full export queue drops spans and counts them"
    finally:
        assert daemon.stop() == 0
        slow.stop()

    # nobody listening at all: the same
    unreachable = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    daemon = DaemonProcess(daemon_home, env=unreachable).start()
    try:
        run = daemon.wait(daemon.submit(repo.path).id)
        assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
    finally:
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 15, "shutdown does not wait forever on export"


def test_no_exporter_by_default_but_trace_context_still_reaches_stages(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    repo = pipeline_repo(PIPELINE.format(out=tmp_path, test_exit=0))
    run = daemon.wait(daemon.submit(repo.path).id)
    status = daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest())
    assert list(status.trace_exporters) == []
    traceparent = (tmp_path / "lint.traceparent").read_text().strip()
    assert traceparent.startswith(f"00-{run.trace_id}-")


def test_status_and_the_docs_agree_on_span_counts_when_nothing_is_exported(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    repo = pipeline_repo(PIPELINE.format(out=tmp_path, test_exit=0))
    daemon.wait(daemon.submit(repo.path).id)
    deadline = time.monotonic() + 20
    status = daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest())
    while status.spans_ended < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
        status = daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest())
    assert (status.spans_ended, status.spans_exported, list(status.trace_exporters)) == (4, 0, [])

    env = {**os.environ, "CONVEYOR_ADDRESS": daemon.address}
    result = subprocess.run(
        [sys.executable, "-m", "conveyor.client.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = [line for line in result.stdout.splitlines() if "spans:" in line]
    assert line == "  spans:         4 ended, not exported (no exporter configured)"
    docs = (Path(__file__).parents[2] / "docs" / "telemetry.md").read_text()
    documented = [d for d in docs.splitlines() if "spans:" in d and "not exported" in d]
    assert [re.sub(r"\d+", "N", d) for d in documented] == [re.sub(r"\d+", "N", line)]
