"""Records to protobuf messages and back.

Every text that leaves the daemon is cut to :data:`MAX_RESPONSE_TEXT`, and a
run's message is fitted to a byte budget (:func:`fit_run`), so no stored data,
however large, can make an answer fail.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from conveyor.daemon.api.limits import MAX_RESPONSE_TEXT, RUN_BUDGET
from conveyor.daemon.artifacts.model import Artifact
from conveyor.daemon.auth.identity import Principal
from conveyor.daemon.auth.tokens import TokenRecord
from conveyor.daemon.delivery.dora import DoraFigures
from conveyor.daemon.delivery.records import (
    Commit,
    DeploymentKind,
    DeploymentRecord,
    DeploymentStatus,
)
from conveyor.daemon.delivery.service import EnvironmentView, StopResult
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
from conveyor.daemon.secrets.redaction import redact
from conveyor.daemon.store.artifacts import CacheHit
from conveyor.daemon.store.audit import AuditRecord
from conveyor.v1 import (
    artifacts_pb2,
    audit_pb2,
    auth_pb2,
    delivery_pb2,
    pipelines_pb2,
    runs_pb2,
    server_pb2,
)

#: Events sent with one deployment (the first ones and the last ones).
MAX_EVENTS = 1000


def clip(text: str, limit: int = MAX_RESPONSE_TEXT) -> str:
    """``text``, or its first ``limit`` characters and how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


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


def stage_message(stage: StageRecord, *, summary: bool = False) -> runs_pb2.Stage:
    return runs_pb2.Stage(
        name=clip(stage.name),
        kind=clip(stage.kind),
        needs=[clip(need) for need in stage.needs],
        status=stage_status(stage.status),
        attempt=stage.attempt,
        exit_code=stage.exit_code,
        started_at=timestamp(stage.started_at),
        finished_at=timestamp(stage.finished_at),
        reason=clip(stage.reason),
        log_size=stage.log_size,
        report=report_message(stage.report, summary=summary) if stage.report is not None else None,
    )


def report_message(report: StageReport, *, summary: bool = False) -> runs_pb2.StageReport:
    """The report; with ``summary``, only its counts and gate (the findings
    and tests are then counted in ``truncated``)."""
    message = runs_pb2.StageReport(
        kind=clip(report.kind),
        counts={clip(key, 100): value for key, value in report.counts.items()},
        truncated=report.truncated,
        gate_passed=report.gate_passed,
        gate_reason=clip(report.gate_reason),
        sources=[clip(source) for source in report.sources],
    )
    if summary:
        message.truncated += len(report.findings) + len(report.tests)
        return message
    message.findings.extend(
        runs_pb2.Finding(
            tool=clip(f.tool),
            rule=clip(f.rule),
            severity=clip(f.severity),
            file=clip(f.file),
            line=f.line,
            column=f.column,
            message=clip(f.message),
            baselined=f.baselined,
            fingerprint=clip(f.fingerprint),
            fails_gate=f.fails_gate,
        )
        for f in report.findings
    )
    message.tests.extend(
        runs_pb2.TestCaseResult(
            name=clip(t.name),
            outcome=clip(t.outcome),
            message=clip(t.message),
            file=clip(t.file),
            duration_seconds=t.duration_seconds,
        )
        for t in report.tests
    )
    return message


def run_message(run: RunRecord, *, summary: bool = False) -> runs_pb2.Run:
    """The run with its stages; with ``summary``, reports are summaries (as
    ListRuns sends them)."""
    return runs_pb2.Run(
        id=run.id,
        number=run.number,
        pipeline=clip(run.pipeline),
        repository=clip(run.repository),
        ref=clip(run.ref),
        commit=clip(run.commit),
        pipeline_path=clip(run.pipeline_path),
        trigger=trigger(run.trigger),
        status=run_status(run.status),
        reason=clip(run.reason),
        created_at=timestamp(run.created_at),
        started_at=timestamp(run.started_at),
        finished_at=timestamp(run.finished_at),
        stages=[stage_message(stage, summary=summary) for stage in run.stages],
        concurrency_group=clip(run.concurrency_group),
        last_event_seq=run.last_event_seq,
        trace_id=run.trace_id,
        span_id=run.span_id,
        version=clip(run.version),
        submitted_by=clip(run.submitted_by),
    )


def _item_cost(item: Message) -> int:
    """Bytes a message takes as an item of a repeated field numbered below 16
    (one byte of tag, then its length as a varint)."""
    size = item.ByteSize()
    return size + 1 + max(1, (size.bit_length() + 6) // 7)


#: Stage reasons are cut to this many characters when a run is still too large.
_SHORT_TEXT = 200


def fit_run(message: runs_pb2.Run, budget: int = RUN_BUDGET) -> runs_pb2.Run:
    """Make ``message`` take at most about ``budget`` bytes, in place.

    First the report lists are cut from the end, last stage first (each cut
    item counted in the report's ``truncated``); then stage reasons are
    shortened. Counts, gates and statuses stay; only a run with more stages
    than fit (tens of thousands) loses its last stages, which the run's
    reason then says.
    """
    excess = message.ByteSize() - budget
    if excess <= 0:
        return message
    for stage in reversed(message.stages):
        if not stage.HasField("report"):
            continue
        report = stage.report
        for items in (report.tests, report.findings):
            while items and excess > 0:
                excess -= _item_cost(items[-1])
                del items[-1]
                report.truncated += 1
        if excess <= 0:
            return message
    for stage in message.stages:
        if len(stage.reason) > _SHORT_TEXT:
            stage.reason = clip(stage.reason, _SHORT_TEXT)
    excess = message.ByteSize() - budget
    total = len(message.stages)
    while excess > 0 and message.stages:
        excess -= _item_cost(message.stages[-1])
        del message.stages[-1]
    if len(message.stages) < total:
        left_out = total - len(message.stages)
        message.reason = (
            f"{clip(message.reason, _SHORT_TEXT)}"
            f" ({left_out} of {total} stages left out: too many to send)"
        )
    return message


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
        stage=clip(event.stage),
        stage_status=(
            stage_status(event.stage_status)
            if event.stage_status
            else runs_pb2.STAGE_STATUS_UNSPECIFIED
        ),
        attempt=event.attempt,
        exit_code=event.exit_code,
        message=clip(event.message),
    )


def diagnostic_message(diag: Diagnostic) -> pipelines_pb2.Diagnostic:
    return pipelines_pb2.Diagnostic(
        file=clip(diag.file),
        line=diag.line,
        column=diag.column,
        path=clip(diag.path),
        message=clip(redact(diag.message)),
        severity=pipelines_pb2.SEVERITY_ERROR,
    )


def plugin_message(info: PluginInfo) -> server_pb2.Plugin:
    return server_pb2.Plugin(
        name=clip(info.name),
        distribution=clip(info.distribution),
        version=clip(info.version),
        hooks=[clip(hook) for hook in info.hooks],
        provides=[clip(item) for item in info.provides],
        error=clip(redact(info.error)),
    )


def artifact_message(
    artifact: Artifact, cache_hits: Sequence[CacheHit] = (), *, summary: bool = False
) -> artifacts_pb2.Artifact:
    """The artifact; with ``summary`` (ListArtifacts), without its
    provenance envelope. The envelope is never cut: cutting it would make
    it fail verification."""
    return artifacts_pb2.Artifact(
        digest=artifact.digest,
        kind=clip(artifact.kind),
        name=clip(artifact.name),
        version=clip(artifact.version),
        tags=[clip(tag) for tag in artifact.tags],
        size=artifact.size,
        media_type=clip(artifact.media_type),
        repository=clip(artifact.repository),
        ref=clip(artifact.ref),
        commit=clip(artifact.commit),
        pipeline=clip(artifact.pipeline),
        run_id=artifact.run_id,
        run_number=artifact.run_number,
        stage=clip(artifact.stage),
        stages=[
            artifacts_pb2.ArtifactStage(
                name=clip(s.name),
                started_at=timestamp(s.started_at),
                finished_at=timestamp(s.finished_at),
            )
            for s in artifact.stages
        ],
        created_at=timestamp(artifact.created_at),
        trace_id=artifact.trace_id,
        span_id=artifact.span_id,
        pushed_to=[clip(name) for name in artifact.pushed_to],
        manifest_digest=artifact.manifest_digest,
        reproducible=artifact.reproducible,
        changed_files=[clip(path) for path in artifact.changed_files],
        provenance="" if summary else artifact.provenance,
        key_id=artifact.key_id,
        attributes={clip(k, 100): clip(v) for k, v in artifact.attributes.items()},
        cache_key=artifact.cache_key,
        cache_hits=[
            artifacts_pb2.CacheHit(
                run_id=hit.run_id,
                run_number=hit.run_number,
                stage=clip(hit.stage),
                created_at=timestamp(hit.created_at),
            )
            for hit in cache_hits
        ],
    )


def token_message(record: TokenRecord) -> auth_pb2.ApiToken:
    """A token without its secret (the digest is never sent either)."""
    return auth_pb2.ApiToken(
        id=record.id,
        name=clip(record.name),
        identity=clip(record.identity),
        roles=list(record.roles),
        repositories=[clip(folder) for folder in record.repositories],
        created_at=timestamp(record.created_at),
        created_by=clip(record.created_by),
        expires_at=timestamp(record.expires_at),
        revoked_at=timestamp(record.revoked_at),
        revoked_by=clip(record.revoked_by),
    )


def audit_message(record: AuditRecord) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        seq=record.seq,
        time=timestamp(record.time),
        identity=clip(record.identity),
        auth_method=record.auth_method,
        action=clip(record.action),
        target=clip(record.target),
        outcome=record.outcome,
        code=record.code,
        detail=clip(record.detail),
        peer=clip(record.peer),
        environment=clip(record.environment),
        token_id=record.token_id,
    )


def whoami_message(principal: Principal) -> auth_pb2.WhoAmIResponse:
    return auth_pb2.WhoAmIResponse(
        identity=principal.identity,
        auth_method=str(principal.method),
        roles=sorted(str(role) for role in principal.roles),
        repositories=list(principal.repositories),
        any_repository=principal.any_repository,
        token_id=principal.token_id,
    )


# -- delivery ----------------------------------------------------------------------


def deployment_status(status: DeploymentStatus) -> delivery_pb2.DeploymentStatus.ValueType:
    return delivery_pb2.DeploymentStatus.Value(f"DEPLOYMENT_STATUS_{status.name}")


def deployment_kind(kind: DeploymentKind) -> delivery_pb2.DeploymentKind.ValueType:
    return delivery_pb2.DeploymentKind.Value(f"DEPLOYMENT_KIND_{kind.name}")


def _commits(commits: Sequence[Commit]) -> list[delivery_pb2.Commit]:
    return [delivery_pb2.Commit(id=c.id, subject=clip(c.subject, 500)) for c in commits]


def deployment_message(
    record: DeploymentRecord, *, events: bool = False
) -> delivery_pb2.Deployment:
    """The deployment; with ``events``, its log and transitions (the first
    and last :data:`MAX_EVENTS` / 2 of a longer log)."""
    r = record
    message = delivery_pb2.Deployment(
        id=r.id,
        environment=clip(r.environment),
        kind=deployment_kind(r.kind),
        status=deployment_status(r.status),
        reason=clip(r.reason),
        digest=r.digest,
        artifact_name=clip(r.artifact_name),
        artifact_kind=clip(r.artifact_kind),
        version=clip(r.version),
        commit=clip(r.commit),
        pipeline=clip(r.pipeline),
        run_id=r.run_id,
        run_number=r.run_number,
        deployer=clip(r.deployer),
        target=clip(r.target),
        replicas=r.replicas,
        created_at=timestamp(r.created_at),
        started_at=timestamp(r.started_at),
        finished_at=timestamp(r.finished_at),
        healthy_at=timestamp(r.healthy_at),
        duration_seconds=r.duration or 0.0,
        commit_time=timestamp(r.commit_time),
        source_environment=clip(r.source_environment),
        previous_id=r.previous_id,
        previous_digest=r.previous_digest,
        restores_id=r.restores_id,
        cause_id=r.cause_id,
        restored_by=r.restored_by,
        commits=_commits(r.commits),
        reverted_commits=_commits(r.reverted),
        commits_total=r.commits_total,
        config_hash=r.config_hash,
        config_changed=r.config_changed,
        trace_id=r.trace_id,
        span_id=r.span_id,
        approval_expires_at=timestamp(r.approval_expires_at),
        decided_by=clip(r.decided_by),
        decided_at=timestamp(r.decided_at),
        decision_comment=clip(r.decision_comment),
        stopped_at=timestamp(r.stopped_at),
        stopped_by=clip(r.stopped_by),
    )
    if events:
        shown = r.events
        if len(shown) > MAX_EVENTS:
            shown = [*shown[: MAX_EVENTS // 2], *shown[-MAX_EVENTS // 2 :]]
        message.events.extend(
            delivery_pb2.DeploymentEvent(
                seq=e.seq,
                time=timestamp(e.time),
                status=deployment_status(e.status),
                from_status=(
                    deployment_status(e.from_status)
                    if e.from_status is not None
                    else delivery_pb2.DEPLOYMENT_STATUS_UNSPECIFIED
                ),
                message=clip(e.message),
            )
            for e in shown
        )
    return message


def environment_message(view: EnvironmentView) -> delivery_pb2.Environment:
    spec = view.spec
    message = delivery_pb2.Environment(
        name=clip(view.name),
        target=clip(spec.target) if spec is not None else "",
        port=spec.port if spec is not None else 0,
        endpoint=f"127.0.0.1:{spec.port}" if spec is not None else "",
        desired_replicas=spec.replicas if spec is not None else 0,
        requires_approval=spec.requires_approval if spec is not None else False,
        promote_from=clip(spec.promote_from or "") if spec is not None else "",
        source=clip(view.source),
        since=timestamp(view.since),
        healthy=view.healthy,
        health_detail=clip(view.health_detail),
        busy=clip(view.busy),
        replicas=[
            delivery_pb2.Replica(
                id=clip(r.replica.id),
                port=r.replica.port,
                state=r.replica.state,
                healthy=r.healthy,
                detail=clip(r.detail),
                deployment_id=clip(r.replica.deployment_id),
                digest=clip(r.replica.digest),
            )
            for r in view.replicas
        ],
    )
    if view.current is not None:
        message.current.CopyFrom(deployment_message(view.current))
    if view.active is not None:
        message.active.CopyFrom(deployment_message(view.active))
    return message


def stop_message(result: StopResult) -> delivery_pb2.StopEnvironmentResponse:
    message = delivery_pb2.StopEnvironmentResponse(
        environment=clip(result.environment),
        replicas_stopped=result.replicas,
        proxy_stopped=result.proxy,
    )
    if result.stopped is not None:
        message.stopped.CopyFrom(deployment_message(result.stopped))
    return message


def dora_message(figures: DoraFigures) -> delivery_pb2.DoraMetrics:
    f = figures
    message = delivery_pb2.DoraMetrics(
        environment=clip(f.environment),
        window_start=timestamp(f.window_start),
        window_end=timestamp(f.window_end),
        deployments=f.deployments,
        deployments_per_day=f.deployments_per_day,
        changes=f.changes,
        failed_changes=f.failed_changes,
        lead_time_samples=f.lead_time_samples,
        restored=f.restored,
        unrestored=f.unrestored,
    )
    optional = {
        "change_failure_rate": f.change_failure_rate,
        "lead_time_median_seconds": f.lead_time_median,
        "lead_time_p90_seconds": f.lead_time_p90,
        "time_to_restore_median_seconds": f.time_to_restore_median,
        "time_to_restore_p90_seconds": f.time_to_restore_p90,
    }
    for name, value in optional.items():
        if value is not None:
            setattr(message, name, value)
    return message
