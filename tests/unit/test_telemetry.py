"""Telemetry configuration and span building, without a daemon."""

from __future__ import annotations

import time

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
from conveyor.daemon.telemetry.attributes import ref_name_and_type
from conveyor.daemon.telemetry.metrics import Instruments
from conveyor.daemon.telemetry.tracing import RunTracing, remote_context


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


def test_ref_names_are_shortened_with_their_type() -> None:
    assert ref_name_and_type("refs/heads/main") == ("main", "branch")
    assert ref_name_and_type("refs/tags/v1.2") == ("v1.2", "tag")
    assert ref_name_and_type("main") == ("main", None)


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
