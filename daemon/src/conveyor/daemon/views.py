"""Frozen views of runs, stages and deployments: what plugins are given.

The scheduler works on mutable :class:`~conveyor.daemon.records.RunRecord`
and :class:`~conveyor.daemon.records.StageRecord` objects. Plugins never see
those: lifecycle hooks and stage kinds get a :class:`Run` (with its
:class:`Stage` s) snapshotted at the moment of the call, so a plugin can
keep it, hand it to another task or read it later without seeing (or
causing) changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from conveyor.daemon.delivery.records import DeploymentKind, DeploymentRecord, DeploymentStatus
from conveyor.daemon.records import RunRecord, RunStatus, StageRecord, StageStatus, TriggerKind
from conveyor.daemon.reports import StageReport


@dataclass(frozen=True)
class Stage:
    """A stage of a run, as it was when the view was taken."""

    #: The id of the run the stage belongs to.
    run_id: str
    name: str
    #: Position in the run's (topological) stage order, from 0.
    position: int
    #: The stage kind (``uses:``).
    kind: str
    needs: tuple[str, ...]
    status: StageStatus
    #: The attempt running or last run: 1 for the first, 0 before it starts.
    attempt: int
    exit_code: int | None
    #: Unix seconds, or None.
    started_at: float | None
    finished_at: float | None
    reason: str
    #: Bytes in the stage's log.
    log_size: int
    #: Parsed results (lint findings, test counts...), when the kind returned some.
    report: StageReport | None


@dataclass(frozen=True)
class Run:
    """A run with its stages, as it was when the view was taken."""

    id: str
    number: int
    pipeline: str
    #: The repository's path on the daemon's machine.
    repository: str
    ref: str
    commit: str
    pipeline_path: str
    trigger: TriggerKind
    status: RunStatus
    reason: str
    #: Unix seconds; started/finished are None until then.
    created_at: float
    started_at: float | None
    finished_at: float | None
    #: The concurrency group the run is serialised in ("" for none).
    concurrency_group: str
    #: The run span's context (hex), to link to the run's trace.
    trace_id: str
    span_id: str
    stages: tuple[Stage, ...]
    #: The version (SemVer 2.0.0) the run builds: a ``vX.Y.Z`` tag on the
    #: commit, else the pipeline's ``version:`` with the run number as
    #: pre-release; "" before the run starts.
    version: str = ""

    def stage(self, name: str) -> Stage:
        """The stage called ``name``; KeyError when the run has none."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


def _report_copy(report: StageReport | None) -> StageReport | None:
    if report is None:
        return None
    return dataclasses.replace(
        report,
        counts=dict(report.counts),
        findings=list(report.findings),
        tests=list(report.tests),
        sources=list(report.sources),
    )


_STAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Stage))
_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(Run))


def stage_view(record: StageRecord) -> Stage:
    """A frozen snapshot of ``record``."""
    values = {name: getattr(record, name) for name in _STAGE_FIELDS}
    values.update(needs=tuple(record.needs), report=_report_copy(record.report))
    return Stage(**values)


def run_view(record: RunRecord, stages: tuple[Stage, ...] | None = None) -> Run:
    """A frozen snapshot of ``record`` and its stages (``stages``: snapshots
    of them taken already, see :class:`RunViews`)."""
    values = {name: getattr(record, name) for name in _RUN_FIELDS}
    if stages is None:
        stages = tuple(stage_view(stage) for stage in record.stages)
    values.update(stages=stages)
    return Run(**values)


class RunViews:
    """Snapshots of one run while it executes, for its stage attempts.

    A stage's snapshot is taken again only after :meth:`changed` says the
    stage changed, so a run of n stages costs n snapshots per attempt's
    view instead of n stage copies (what made the view quadratic in the
    number of stages).
    """

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self._stages: dict[str, Stage] = {}

    def changed(self, stage: str) -> None:
        """The stage's record changed: its next snapshot is taken anew."""
        self._stages.pop(stage, None)

    def view(self) -> Run:
        """A frozen snapshot of the run as it is now."""
        cached = self._stages
        stages = []
        for record in self.record.stages:
            snapshot = cached.get(record.name)
            if snapshot is None:
                snapshot = cached[record.name] = stage_view(record)
            stages.append(snapshot)
        return run_view(self.record, tuple(stages))


@dataclass(frozen=True)
class Deployment:
    """A deployment as it was when the view was taken (given to
    ``conveyor_deployment_finished`` and returned by ``ctx.deployments``)."""

    id: str
    environment: str
    #: ``deploy``, ``promote``, ``rollback`` or ``restore`` (automatic).
    kind: DeploymentKind
    status: DeploymentStatus
    #: Why it is in its status, in words.
    reason: str
    #: The artifact: digest, name, kind, version and where it came from.
    digest: str
    artifact_name: str
    artifact_kind: str
    version: str
    commit: str
    pipeline: str
    run_id: str
    run_number: int
    #: Who asked for it, as the daemon knows them (``uid:1000``, ``run:<id>``).
    deployer: str
    target: str
    replicas: int
    #: Unix seconds; started/finished are None until then.
    created_at: float
    started_at: float | None
    finished_at: float | None
    #: The deployment that ran before it ("" for the first) and its digest.
    previous_id: str
    previous_digest: str
    #: A promotion's source environment.
    source_environment: str
    #: A rollback's or restore's earlier deployment, and a restore's cause.
    restores_id: str
    cause_id: str
    #: The restore that put the previous version back after this one failed.
    restored_by: str
    #: ``(commit id, subject)`` since the previous deployment, newest first.
    commits: tuple[tuple[str, str], ...]
    config_hash: str
    config_changed: bool
    #: The deployment span's context (hex).
    trace_id: str
    span_id: str

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return self.finished_at - (self.started_at or self.created_at)


def deployment_view(record: DeploymentRecord) -> Deployment:
    """A frozen snapshot of ``record``."""
    values = {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(Deployment)
        if f.name != "commits"
    }
    return Deployment(**values, commits=tuple((c.id, c.subject) for c in record.commits))
