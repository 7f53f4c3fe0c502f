"""Telemetry configuration and span building, without a daemon."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.daemon.records import (
    RunRecord,
    RunStatus,
    StageRecord,
    StageStatus,
    TriggerKind,
)
from conveyor.daemon.telemetry import TelemetryConfigError, configure
from conveyor.daemon.telemetry.attributes import ref_name, task_type
from conveyor.daemon.telemetry.metrics import Instruments
from conveyor.daemon.telemetry.tracing import RunTracing, remote_context
from conveyor.daemon.telemetry.urls import RunUrls
from conveyor.daemon.vcs import resolve
from tests.support.repos import git, make_repo


def test_no_exporter_unless_asked() -> None:
    telemetry = configure(env={})
    assert telemetry.exporters == []
    telemetry.shutdown(1)


def test_an_otlp_endpoint_turns_otlp_export_on() -> None:
    telemetry = configure(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert telemetry.exporters == ["otlp"]
    telemetry.shutdown(1)
    from_config = configure(env={}, endpoint="http://127.0.0.1:4317")
    assert from_config.exporters == ["otlp"]
    from_config.shutdown(1)


def test_otel_variables_win_over_the_daemon_configuration() -> None:
    telemetry = configure(env={"OTEL_TRACES_EXPORTER": "console"}, exporter="otlp")
    assert telemetry.exporters == ["console"]
    telemetry.shutdown(1)
    disabled = configure(
        env={"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    )
    assert disabled.exporters == []
    disabled.shutdown(1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "unknown exporter 'zipkin'"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "OTLP over gRPC only",
        ),
    ],
)
def test_unsupported_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(TelemetryConfigError, match=message):
        configure(env=env)


def test_ref_names_are_shortened() -> None:
    assert ref_name("refs/heads/main") == "main"
    assert ref_name("refs/tags/v1.2") == "v1.2"
    assert ref_name("main") == "main"
    assert ref_name("refs/pull/7/head") == "refs/pull/7/head"


def _run() -> RunRecord:
    now = time.time()
    return RunRecord(
        id="0123456789abcdef0123",
        number=7,
        pipeline="svc",
        repository="/srv/svc.git",
        ref="refs/heads/main",
        commit="a" * 40,
        pipeline_path="conveyor.yaml",
        trigger=TriggerKind.PUSH,
        status=RunStatus.QUEUED,
        created_at=now,
        spec_json="{}",
        concurrency_group="",
        stages=[
            StageRecord(
                run_id="0123456789abcdef0123", name="build", position=0, kind="build", needs=[]
            )
        ],
    )


def test_stage_outcome_attributes_and_previous_attempt_links_reach_the_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = RunTracing(provider.get_tracer("t"), Instruments(MeterProvider().get_meter("t")))
    run = _run()
    previous = remote_context("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    trace_id, span_id = tracing.start_run(run, previous=previous)
    stage = run.stages[0]
    stage.started_at = time.time()
    env = tracing.start_stage(run, stage)
    assert env["TRACEPARENT"].split("-")[1] == trace_id
    stage.status, stage.finished_at, stage.attempt = StageStatus.SUCCEEDED, time.time(), 1
    digest = "sha256:" + "b" * 64
    tracing.end_stage(run, stage, attributes={"artifact.hash": digest})
    run.status, run.started_at, run.finished_at = RunStatus.SUCCEEDED, stage.started_at, time.time()
    tracing.end_run(run)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    build, root = spans["build build"], spans["RUN svc"]
    assert build.attributes is not None and build.attributes["artifact.hash"] == digest
    assert build.attributes["cicd.pipeline.task.type"] == "build"
    assert root.attributes is not None
    assert root.attributes["vcs.ref.head.name"] == "main"
    assert root.attributes["vcs.ref.head.type"] == "branch"
    assert format(root.context.span_id, "016x") == span_id
    assert [format(link.context.span_id, "016x") for link in root.links] == ["00f067aa0ba902b7"]


def test_run_and_stage_urls_name_the_daemon_by_host_and_home() -> None:
    urls = RunUrls.of_daemon(Path("/var/lib/conveyor"), "Build-1")
    assert urls.daemon == "conveyor://build-1/var/lib/conveyor"
    assert urls.run("01a21f1faf12120f53ee") == (
        "conveyor://build-1/var/lib/conveyor/runs/01a21f1faf12120f53ee"
    )
    assert urls.stage("01a21f1faf12120f53ee", "unit-tests") == (
        "conveyor://build-1/var/lib/conveyor/runs/01a21f1faf12120f53ee/stages/unit-tests"
    )
    odd = RunUrls.of_daemon(Path("/srv/ci home#1"), "ci")
    assert odd.run("ab") == "conveyor://ci/srv/ci%20home%231/runs/ab"


def test_a_web_address_gives_the_same_paths_under_it() -> None:
    urls = RunUrls("https://ci.example.org/")
    assert urls.stage("ab12", "build") == "https://ci.example.org/runs/ab12/stages/build"


class _DeployKind:
    name = "release"
    task_type = "deploy"


class _PlainKind:
    name = "changelog"


@pytest.mark.parametrize(
    ("kind", "declared", "expected"),
    [
        ("lint", None, "test"),
        ("test", None, "test"),
        ("scan", None, "test"),
        ("build", None, "build"),
        ("push", None, "build"),
        ("file", None, "build"),
        ("deploy", None, "deploy"),
        ("run", None, "run"),
        ("changelog", _PlainKind(), "changelog"),
        ("release", _DeployKind(), "deploy"),
        ("lint", _DeployKind(), "deploy"),  # what a kind declares wins
    ],
)
def test_task_types_follow_the_conventions_values(
    kind: str, declared: object, expected: str
) -> None:
    assert task_type(kind, declared) == expected


def test_spans_carry_urls_the_ref_type_and_a_declared_task_type() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    urls = RunUrls.of_daemon(Path("/srv/cv"), "ci")
    tracing = RunTracing(
        provider.get_tracer("t"), Instruments(MeterProvider().get_meter("t")), urls
    )
    tracing.use_stage_kinds({"release": _DeployKind()})
    run = _run()
    run.ref, run.ref_type = "v1.2", "tag"  # a short name the daemon found to be a tag
    run.stages[0].kind = "release"
    tracing.start_run(run)
    stage = run.stages[0]
    stage.status, stage.finished_at = StageStatus.SKIPPED, time.time()
    tracing.end_stage(run, stage)  # never started: a placeholder span, typed all the same
    run.status, run.finished_at = RunStatus.CANCELLED, time.time()
    tracing.end_run(run)
    spans = {s.name: s.attributes or {} for s in exporter.get_finished_spans()}
    root, release = spans["RUN svc"], spans["release build"]
    assert root["cicd.pipeline.run.url.full"] == f"conveyor://ci/srv/cv/runs/{run.id}"
    assert (root["vcs.ref.head.name"], root["vcs.ref.head.type"]) == ("v1.2", "tag")
    assert release["cicd.pipeline.task.run.url.full"] == (
        f"conveyor://ci/srv/cv/runs/{run.id}/stages/build"
    )
    assert release["cicd.pipeline.task.type"] == "deploy"


def test_a_short_ref_of_unknown_type_has_no_type_attribute() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = RunTracing(provider.get_tracer("t"), Instruments(MeterProvider().get_meter("t")))
    run = _run()
    run.ref = "a" * 40
    tracing.start_run(run)
    run.status, run.finished_at = RunStatus.SUCCEEDED, time.time()
    tracing.end_run(run)
    (root,) = exporter.get_finished_spans()
    assert root.attributes is not None and "vcs.ref.head.type" not in root.attributes


def test_the_resource_names_the_daemon_as_the_cicd_worker(tmp_path: Path) -> None:
    telemetry = configure(env={}, home=tmp_path / "home")
    try:
        attributes = telemetry.tracer_provider.resource.attributes
        host = str(attributes["cicd.worker.name"])
        assert host
        assert attributes["cicd.worker.id"] == f"{host}:{tmp_path / 'home'}"
        assert attributes["cicd.worker.url.full"] == telemetry.runs.urls.daemon
        assert telemetry.runs.urls.daemon.endswith(str(tmp_path / "home"))
        assert attributes["service.name"] == "conveyor"
    finally:
        telemetry.shutdown(1)


def test_spans_are_counted_as_ended_when_nothing_is_exported(tmp_path: Path) -> None:
    telemetry = configure(env={}, home=tmp_path)
    try:
        run = _run()
        telemetry.runs.start_run(run)
        run.stages[0].status, run.stages[0].finished_at = StageStatus.SKIPPED, time.time()
        telemetry.runs.end_stage(run, run.stages[0])
        run.status, run.finished_at = RunStatus.CANCELLED, time.time()
        telemetry.runs.end_run(run)
        stats = telemetry.stats
        assert telemetry.exporters == []
        assert (stats.ended, stats.exported, stats.failed, stats.dropped) == (2, 0, 0, 0)
    finally:
        telemetry.shutdown(1)


def test_with_nothing_exported_spans_are_not_recorded_but_carry_the_run_s_trace(
    tmp_path: Path,
) -> None:
    telemetry = configure(env={}, home=tmp_path)
    try:
        run = _run()
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        trace_id, span_id = telemetry.runs.start_run(run, {"traceparent": parent})
        run.stages[0].started_at = time.time()
        env = telemetry.runs.start_stage(run, run.stages[0])
        span = telemetry.runs._stages[(run.id, run.stages[0].name)]
        assert not span.is_recording(), "nothing exports spans: none is recorded"
        assert trace_id == "0af7651916cd43dd8448eb211c80319c", "the caller's trace goes on"
        assert span_id != "b7ad6b7169203331" and len(span_id) == 16
        version, stage_trace, stage_span, flags = env["TRACEPARENT"].split("-")
        assert (version, stage_trace, flags) == ("00", trace_id, "01")
        assert stage_span not in (span_id, "0" * 16), "the stage span has an id of its own"
        run.stages[0].status, run.stages[0].finished_at = StageStatus.SUCCEEDED, time.time()
        telemetry.runs.end_stage(run, run.stages[0])
        run.status, run.finished_at = RunStatus.SUCCEEDED, time.time()
        telemetry.runs.end_run(run)
        assert telemetry.stats.ended == 2
        fresh = _run()
        fresh.id = "01a2000000000000beef"
        new_trace, _ = telemetry.runs.start_run(fresh)
        assert new_trace != trace_id and new_trace != "0" * 32, (
            "a run without a caller's trace starts one"
        )
    finally:
        telemetry.shutdown(1)


async def test_resolve_tells_branches_from_tags(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": "name: x\n"})
    first = git("rev-parse", "HEAD", cwd=repo.path)
    git("tag", "-a", "-m", "release", "v1.0", cwd=repo.path)
    git("tag", "light", cwd=repo.path)
    git("branch", "feature/x", cwd=repo.path)
    second = repo.commit({"README": "more"})
    path = repo.path

    async def ref_type(ref: str, commit: str = "") -> str:
        return (await resolve(path, ref, "conveyor.yaml", commit=commit)).ref_type

    assert await ref_type("main") == "branch"
    assert await ref_type("feature/x") == "branch"
    assert await ref_type("v1.0") == "tag"
    assert await ref_type("light") == "tag"
    assert await ref_type("refs/heads/main") == "branch"
    assert await ref_type("refs/tags/v1.0") == "tag"
    assert await ref_type(first) == ""
    assert await ref_type("HEAD") == ""
    # as the CLI submits (branch name and its commit) and the hook (full ref and commit)
    assert await ref_type("main", commit=first) == "branch"
    assert await ref_type("refs/tags/v1.0", commit=first) == "tag"
    assert await ref_type("gone", commit=second) == ""
    assert (await resolve(path, "main", "conveyor.yaml", commit=first)).commit == first
