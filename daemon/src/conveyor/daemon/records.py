"""Plain records of runs, stages and events, as stored and as served."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from conveyor.daemon.reports import StageReport


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


class StageStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self not in (StageStatus.PENDING, StageStatus.RUNNING)


class TriggerKind(enum.StrEnum):
    MANUAL = "manual"
    PUSH = "push"
    API = "api"


class EventKind(enum.StrEnum):
    RUN_STATUS = "run_status"
    STAGE_STATUS = "stage_status"
    STAGE_RETRY = "stage_retry"


@dataclass
class StageRecord:
    run_id: str
    name: str
    position: int
    kind: str
    needs: list[str]
    status: StageStatus = StageStatus.PENDING
    attempt: int = 0
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    log_size: int = 0
    report: StageReport | None = None


@dataclass
class RunRecord:
    id: str
    number: int
    pipeline: str
    repository: str
    ref: str
    commit: str
    pipeline_path: str
    trigger: TriggerKind
    status: RunStatus
    created_at: float
    spec_json: str
    concurrency_group: str
    reason: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    last_event_seq: int = 0
    #: The run span's context (hex), so later work can link back to the run.
    trace_id: str = ""
    span_id: str = ""
    stages: list[StageRecord] = field(default_factory=list)
    #: ``branch`` or ``tag`` when ``ref`` names one (found when it was resolved), else "".
    ref_type: str = ""
    #: The version (SemVer 2.0.0) the run builds, set when it starts: a
    #: ``vX.Y.Z`` tag on the commit, else the pipeline's ``version:`` base
    #: with the run number as pre-release ("" until the run starts).
    version: str = ""
    #: The authenticated identity that submitted the run ("" with authentication off).
    submitted_by: str = ""

    def stage(self, name: str) -> StageRecord:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


@dataclass(frozen=True)
class EventRecord:
    run_id: str
    seq: int
    time: float
    kind: EventKind
    run_status: RunStatus | None = None
    stage: str = ""
    stage_status: StageStatus | None = None
    attempt: int = 0
    exit_code: int | None = None
    message: str = ""
