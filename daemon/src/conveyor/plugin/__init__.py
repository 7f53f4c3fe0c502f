"""Everything a Conveyor plugin author needs, in one public module.

Plugins import from here and from nothing else of Conveyor (the way pytest
plugins use the ``pytest`` namespace); the daemon's own modules
(``conveyor.daemon.*``) are private and change without notice. The hooks
themselves are documented in ``docs/plugins.md``.

Markers:
    :data:`hookimpl` marks a hook implementation.

Settings and secrets:
    ``conveyor_configure(settings)`` hands a plugin its own settings (a
    plain read-only mapping; check it with a :class:`Parameters` model);
    :func:`redact` masks every secret value the daemon holds out of a text
    before it leaves the daemon (a notification, a message).

Stage kinds (``conveyor_stage_kinds``):
    :class:`StageKind` (the protocol), :class:`StageContext` (what a stage
    attempt is given), :class:`StageOutcome` (what it returns),
    :class:`StageSpec` (the stage as written in the pipeline file),
    :class:`Parameters` and :func:`parameter_problems` (``with:`` parameters
    as a pydantic model, with pipeline diagnostics for free).

Executors (``conveyor_executors``):
    :class:`Executor` (the protocol), :class:`ProcessRequest`,
    :class:`ExecutorError`, :class:`StageUser`, :class:`StageOutput` and :class:`OutputWriter`
    (where output goes), :func:`run_in_process_group` (run a local process
    group the way the ``local`` executor does); for executors that run
    containers, :class:`ContainerSpec` (``request.container``),
    :data:`CONTAINER_WORKSPACE`, the labels :data:`LABEL_RUN`,
    :data:`LABEL_STAGE` and :data:`LABEL_DAEMON`, and :class:`ProcessKilled`
    (a process killed by its container: out of memory, a node gone);
    :func:`conveyor_line` (a line from Conveyor itself for a stage log).

Lifecycle hooks (``conveyor_run_started``, ``conveyor_stage_finished``,
``conveyor_run_finished``, ``conveyor_deployment_finished``):
    :class:`Run`, :class:`Stage` and :class:`Deployment`, frozen snapshots
    (stage kinds get the same :class:`Run` as ``ctx.run``);
    :class:`RunStatus`, :class:`StageStatus`, :class:`TriggerKind`,
    :class:`DeploymentStatus` and :class:`DeploymentKind`.

Deploying from a stage: :class:`Deployments` (``ctx.deployments``) and
:class:`DeploymentError`.

Reports (parsed results of a stage, returned in its outcome):
    :class:`StageReport`, :class:`Finding`, :class:`TestCaseResult`.

Artifacts (what build stages produce, ``conveyor_artifact_produced``):
    :class:`ArtifactOutput` (returned in ``StageOutcome.artifacts``),
    :class:`Artifact` (a recorded artifact), :class:`StageTiming`,
    :class:`RegistryCredential`, :data:`OCI_IMAGE`, :data:`FILE`.

Deploy targets (``conveyor_deploy_targets``):
    :class:`DeployTarget` (what every target has), :class:`ReplicaTarget`
    and :class:`ServiceTarget` (the two shapes, by ``rollout``:
    :data:`REPLICA_ROLLOUT`, :data:`SERVICE_ROLLOUT`), :class:`TargetContext`
    (what each call is given), :class:`Environment` and
    :class:`HealthCheck` (what to run, how it is checked),
    :class:`ReplicaRequest` and :class:`ServiceRequest` (what to start),
    :class:`Replica` (what runs), :class:`ProbeResult`, :class:`TargetError`
    and the ``LABEL_*`` names of the labels on what a target starts;
    :func:`spawn_detached`, :func:`stop_detached`, :func:`is_running`,
    :class:`DetachedProcess` and :class:`SpawnError` (start local processes
    that outlive the daemon, as the ``process`` target does).
"""

from conveyor.daemon.artifacts.model import (
    FILE,
    OCI_IMAGE,
    Artifact,
    ArtifactOutput,
    RegistryCredential,
    StageTiming,
)
from conveyor.daemon.delivery.records import DeploymentKind, DeploymentStatus
from conveyor.daemon.delivery.spawn import (
    DetachedProcess,
    SpawnError,
    is_running,
    spawn_detached,
    stop_detached,
)
from conveyor.daemon.delivery.target import (
    LABEL_DEPLOYMENT,
    LABEL_DIGEST,
    LABEL_ENVIRONMENT,
    LABEL_OWNER,
    LABEL_PORT,
    REPLICA_ROLLOUT,
    SERVICE_ROLLOUT,
    DeployTarget,
    Environment,
    HealthCheck,
    ProbeResult,
    Replica,
    ReplicaRequest,
    ReplicaTarget,
    ServiceRequest,
    ServiceTarget,
    TargetContext,
    TargetError,
)
from conveyor.daemon.executors.base import (
    CONTAINER_WORKSPACE,
    LABEL_DAEMON,
    LABEL_RUN,
    LABEL_STAGE,
    ContainerSpec,
    Executor,
    ExecutorError,
    OutputWriter,
    ProcessKilled,
    ProcessRequest,
    StageOutput,
    StageUser,
    conveyor_line,
)
from conveyor.daemon.executors.process import run_in_process_group
from conveyor.daemon.hookspecs import hookimpl
from conveyor.daemon.pipeline import StageSpec
from conveyor.daemon.records import RunStatus, StageStatus, TriggerKind
from conveyor.daemon.reports import Finding, StageReport, TestCaseResult
from conveyor.daemon.secrets.redaction import redact
from conveyor.daemon.stages import (
    DeploymentError,
    Deployments,
    StageContext,
    StageKind,
    StageOutcome,
)
from conveyor.daemon.views import Deployment, Run, Stage
from conveyor.plugin._parameters import Parameters, parameter_problems

__all__ = [
    "CONTAINER_WORKSPACE",
    "FILE",
    "LABEL_DAEMON",
    "LABEL_DEPLOYMENT",
    "LABEL_DIGEST",
    "LABEL_ENVIRONMENT",
    "LABEL_OWNER",
    "LABEL_PORT",
    "LABEL_RUN",
    "LABEL_STAGE",
    "OCI_IMAGE",
    "REPLICA_ROLLOUT",
    "SERVICE_ROLLOUT",
    "Artifact",
    "ArtifactOutput",
    "ContainerSpec",
    "DeployTarget",
    "Deployment",
    "DeploymentError",
    "DeploymentKind",
    "DeploymentStatus",
    "Deployments",
    "DetachedProcess",
    "Environment",
    "Executor",
    "ExecutorError",
    "Finding",
    "HealthCheck",
    "OutputWriter",
    "Parameters",
    "ProbeResult",
    "ProcessKilled",
    "ProcessRequest",
    "RegistryCredential",
    "Replica",
    "ReplicaRequest",
    "ReplicaTarget",
    "Run",
    "RunStatus",
    "ServiceRequest",
    "ServiceTarget",
    "SpawnError",
    "Stage",
    "StageContext",
    "StageKind",
    "StageOutcome",
    "StageOutput",
    "StageReport",
    "StageSpec",
    "StageStatus",
    "StageTiming",
    "StageUser",
    "TargetContext",
    "TargetError",
    "TestCaseResult",
    "TriggerKind",
    "conveyor_line",
    "hookimpl",
    "is_running",
    "parameter_problems",
    "redact",
    "run_in_process_group",
    "spawn_detached",
    "stop_detached",
]
