"""Records to protobuf messages and back."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from conveyor.daemon.pipeline import Diagnostic
from conveyor.daemon.plugins import PluginInfo
from conveyor.daemon.records import (
    EventKind,
    EventRecord,
    RunRecord,
    RunStatus,
    StageRecord,
    StageStatus,
    TriggerKind,
)
from conveyor.daemon.reports import StageReport
from conveyor.v1 import pipelines_pb2, runs_pb2, server_pb2


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def run_status(status: RunStatus) -> runs_pb2.RunStatus.ValueType:
    return runs_pb2.RunStatus.Value(f"RUN_STATUS_{status.name}")


def stage_status(status: StageStatus) -> runs_pb2.StageStatus.ValueType:
    return runs_pb2.StageStatus.Value(f"STAGE_STATUS_{status.name}")


def run_status_from_proto(value: int) -> RunStatus | None:
    if value == runs_pb2.RUN_STATUS_UNSPECIFIED:
        return None
    name = runs_pb2.RunStatus.Name(runs_pb2.RunStatus.ValueType(value)).removeprefix("RUN_STATUS_")
    return RunStatus[name]


def trigger(kind: TriggerKind) -> runs_pb2.TriggerKind.ValueType:
    return runs_pb2.TriggerKind.Value(f"TRIGGER_KIND_{kind.name}")


def trigger_from_proto(value: int) -> TriggerKind:
    if value == runs_pb2.TRIGGER_KIND_UNSPECIFIED:
        return TriggerKind.MANUAL
    name = runs_pb2.TriggerKind.Name(runs_pb2.TriggerKind.ValueType(value))
    return TriggerKind[name.removeprefix("TRIGGER_KIND_")]


def stage_message(stage: StageRecord) -> runs_pb2.Stage:
    return runs_pb2.Stage(
        name=stage.name,
        kind=stage.kind,
        needs=stage.needs,
        status=stage_status(stage.status),
        attempt=stage.attempt,
        exit_code=stage.exit_code,
        started_at=timestamp(stage.started_at),
        finished_at=timestamp(stage.finished_at),
        reason=stage.reason,
        log_size=stage.log_size,
        report=report_message(stage.report) if stage.report is not None else None,
    )


def report_message(report: StageReport) -> runs_pb2.StageReport:
    return runs_pb2.StageReport(
        kind=report.kind,
        counts=report.counts,
        findings=[
            runs_pb2.Finding(
                tool=f.tool,
                rule=f.rule,
                severity=f.severity,
                file=f.file,
                line=f.line,
                column=f.column,
                message=f.message,
                baselined=f.baselined,
                fingerprint=f.fingerprint,
            )
            for f in report.findings
        ],
        tests=[
            runs_pb2.TestCaseResult(
                name=t.name,
                outcome=t.outcome,
                message=t.message,
                file=t.file,
                duration_seconds=t.duration_seconds,
            )
            for t in report.tests
        ],
        truncated=report.truncated,
        gate_passed=report.gate_passed,
        gate_reason=report.gate_reason,
        sources=report.sources,
    )


def run_message(run: RunRecord) -> runs_pb2.Run:
    return runs_pb2.Run(
        id=run.id,
        number=run.number,
        pipeline=run.pipeline,
        repository=run.repository,
        ref=run.ref,
        commit=run.commit,
        pipeline_path=run.pipeline_path,
        trigger=trigger(run.trigger),
        status=run_status(run.status),
        reason=run.reason,
        created_at=timestamp(run.created_at),
        started_at=timestamp(run.started_at),
        finished_at=timestamp(run.finished_at),
        stages=[stage_message(stage) for stage in run.stages],
        concurrency_group=run.concurrency_group,
        last_event_seq=run.last_event_seq,
        trace_id=run.trace_id,
        span_id=run.span_id,
    )


_EVENT_KINDS = {
    EventKind.RUN_STATUS: runs_pb2.RUN_EVENT_KIND_RUN_STATUS,
    EventKind.STAGE_STATUS: runs_pb2.RUN_EVENT_KIND_STAGE_STATUS,
    EventKind.STAGE_RETRY: runs_pb2.RUN_EVENT_KIND_STAGE_RETRY,
}


def event_message(event: EventRecord) -> runs_pb2.RunEvent:
    return runs_pb2.RunEvent(
        run_id=event.run_id,
        seq=event.seq,
        time=timestamp(event.time),
        kind=_EVENT_KINDS[event.kind],
        run_status=(
            run_status(event.run_status) if event.run_status else runs_pb2.RUN_STATUS_UNSPECIFIED
        ),
        stage=event.stage,
        stage_status=(
            stage_status(event.stage_status)
            if event.stage_status
            else runs_pb2.STAGE_STATUS_UNSPECIFIED
        ),
        attempt=event.attempt,
        exit_code=event.exit_code,
        message=event.message,
    )


def diagnostic_message(diag: Diagnostic) -> pipelines_pb2.Diagnostic:
    return pipelines_pb2.Diagnostic(
        file=diag.file,
        line=diag.line,
        column=diag.column,
        path=diag.path,
        message=diag.message,
        severity=pipelines_pb2.SEVERITY_ERROR,
    )


def plugin_message(info: PluginInfo) -> server_pb2.Plugin:
    return server_pb2.Plugin(
        name=info.name,
        distribution=info.distribution,
        version=info.version,
        hooks=info.hooks,
        provides=info.provides,
        error=info.error,
    )
