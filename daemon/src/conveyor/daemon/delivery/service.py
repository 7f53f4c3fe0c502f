"""The delivery operations, on the trio side of the API: deploy, promote,
roll back, approve, reject, and what runs where.

Each operation checks its input and raises a domain error
(:mod:`conveyor.daemon.errors`) that the gRPC layer turns into a status
code; a refused request changes nothing. Who asks is a parameter
(``deployer``, ``approver``): the API layer takes it from the caller's
authenticated identity, never from the request. A deployment is recorded
before anything starts, then rolled out by a task of its own (the call
returns at once): follow it with :meth:`DeliveryService.follow` or
``GetDeployment``.

One deployment at a time per environment: a deploy while another one is
in progress, or waiting for approval, is refused (FAILED_PRECONDITION),
as is one during the environment's recovery after a restart.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

import trio

from conveyor.client.provenance import VerificationError, verify_envelope
from conveyor.daemon.artifacts.catalog import ArtifactCatalog
from conveyor.daemon.artifacts.model import Artifact
from conveyor.daemon.config import Config, port_range
from conveyor.daemon.delivery import dora, gitfacts
from conveyor.daemon.delivery import environments as envs
from conveyor.daemon.delivery.dora import DoraFigures
from conveyor.daemon.delivery.records import (
    Commit,
    DeploymentKind,
    DeploymentRecord,
    DeploymentStatus,
)
from conveyor.daemon.delivery.rollout import Ledger
from conveyor.daemon.delivery.rollouts import ReplicaHealth, Rollouts
from conveyor.daemon.delivery.target import DeployTarget, Environment, TargetError
from conveyor.daemon.errors import (
    ConveyorError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from conveyor.daemon.pipeline import EnvironmentSpec, PipelineSpec
from conveyor.daemon.pipeline.model import NAME_PATTERN
from conveyor.daemon.records import RunStatus
from conveyor.daemon.stages import DeploymentError
from conveyor.daemon.store.deployments import DeploymentFilter, DeploymentStore, StaleTransition
from conveyor.daemon.store.runs import RunStore
from conveyor.daemon.telemetry.deployments import DeploymentTracing
from conveyor.daemon.views import Deployment, deployment_view

log = logging.getLogger(__name__)

_NAME_RE = re.compile(NAME_PATTERN)
_ID_RE = re.compile(r"^[0-9a-f]{12,40}$")
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
#: Seconds between two looks at whether the replicas of each environment run.
SUPERVISE_INTERVAL = 1.0
#: What ``to`` of a rollback says for "the deployment before the current one".
PREVIOUS = "previous"
#: The shortest and longest window of DORA figures, in seconds.
MIN_DORA_WINDOW = 60.0
MAX_DORA_WINDOW = 3660 * 86400.0
S = DeploymentStatus


def new_deployment_id() -> str:
    """Time-ordered, so sorting ids sorts deployments by creation."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


@dataclass(frozen=True)
class EnvironmentView:
    """What ``GetEnvironment`` answers: what runs, since when, how healthy."""

    name: str
    #: The definition, and where it came from ("" when it is unknown now).
    spec: EnvironmentSpec | None
    source: str
    #: The deployment that runs (its latest healthy one), and since when.
    current: DeploymentRecord | None
    since: float | None
    #: A deployment in progress or waiting for approval.
    active: DeploymentRecord | None
    replicas: list[ReplicaHealth] = field(default_factory=list)
    #: Whether the environment answers its health check through its front
    #: port and every replica in traffic passes it.
    healthy: bool = False
    health_detail: str = ""
    #: What works on it now: "deployment ID", "recovery", or "".
    busy: str = ""


@dataclass(frozen=True)
class StopResult:
    """What ``StopEnvironment`` did."""

    environment: str
    #: The deployment that ran there, now marked stopped (None: nothing ran).
    stopped: DeploymentRecord | None
    replicas: int
    proxy: bool


@dataclass
class _Found:
    spec: EnvironmentSpec
    source: str


class DeliveryService:
    def __init__(
        self,
        *,
        config: Config,
        store: DeploymentStore,
        runs: RunStore,
        catalog: ArtifactCatalog,
        targets: Mapping[str, DeployTarget],
        finished: Callable[[DeploymentRecord], None],
        owner: str,
        host_env: Mapping[str, str],
        secrets: envs.SecretResolver = envs.no_secrets,
        tracing: DeploymentTracing | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.runs = runs
        self.catalog = catalog
        self.targets = targets
        self.secrets = secrets
        self.tracing = tracing
        self._on_finished = finished
        self.ledger = Ledger(store, self._finished)
        self.rollouts = Rollouts(
            ledger=self.ledger,
            targets=targets,
            home=config.home,
            owner=owner,
            host_env=host_env,
            ports=port_range(config.replica_ports),
        )
        self._nursery: trio.Nursery | None = None

    def _finished(self, record: DeploymentRecord) -> None:
        self._on_finished(record)

    # -- life ------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover what a previous daemon left (interrupted rollouts, approvals
        waiting), report started, then run rollouts until cancelled.
        Environments are reconciled in the background."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            interrupted = await self._interrupt_progressing()
            for record in await self.store.with_status(S.PENDING_APPROVAL):
                nursery.start_soon(self._expire_later, record)
            names = await self.store.environments()
            for name in names:
                self.rollouts.busy[name] = "recovery"
            task_status.started()
            for name in names:
                nursery.start_soon(
                    self._reconcile, name, [r for r in interrupted if r.environment == name]
                )
            await self._supervise()

    async def _supervise(self) -> None:
        """Every :data:`SUPERVISE_INTERVAL` seconds, replace the replicas of
        idle environments that stopped running (the ``process`` target's
        replicas are supervised: one that crashes is started again)."""
        while True:
            await trio.sleep(SUPERVISE_INTERVAL)
            for name in list(self.rollouts.fleets):
                if name in self.rollouts.busy:
                    continue
                current = await self.store.current(name)
                env = await self.environment_of(current) if current is not None else None
                if current is None or env is None:
                    continue
                dead = await self.rollouts.stopped(env)
                if not dead or name in self.rollouts.busy:
                    continue
                self.rollouts.busy[name] = "supervision"
                try:
                    await self.rollouts.heal(env, current.id, dead)
                except Exception:
                    log.exception("environment %s: replacing stopped replicas failed", name)
                finally:
                    if self.rollouts.busy.get(name) == "supervision":
                        del self.rollouts.busy[name]

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        if self._nursery is None:
            raise FailedPrecondition(
                "the daemon does not deploy (its delivery service is not running)"
            )
        self._nursery.start_soon(fn, *args)

    async def _interrupt_progressing(self) -> list[DeploymentRecord]:
        interrupted = []
        for record in await self.store.with_status(S.PROGRESSING):
            try:
                moved = await self.ledger.move(
                    record.id,
                    S.INTERRUPTED,
                    "the daemon stopped during the rollout; at start-up the environment was"
                    " put back on its last healthy deployment",
                )
            except StaleTransition:
                continue
            interrupted.append(moved)
        return interrupted

    async def _reconcile(self, name: str, interrupted: list[DeploymentRecord]) -> None:
        try:
            current = await self.store.current(name)
            current_env = await self.environment_of(current) if current is not None else None
            await self.rollouts.reconcile(
                name, current, current_env, interrupted, self.environment_of
            )
        except Exception:
            log.exception("environment %s: the recovery after the restart failed", name)
        finally:
            if self.rollouts.busy.get(name) == "recovery":
                del self.rollouts.busy[name]

    # -- resolving -------------------------------------------------------------------

    def _check_name(self, name: str, what: str) -> None:
        if not name:
            raise InvalidArgument(f"{what} is required", field=what)
        if not _NAME_RE.match(name):
            raise InvalidArgument(
                f"{what} {name!r} is not an environment name (letters, digits, '.', '_', '-')",
                field=what,
            )

    async def _spec_for(self, name: str, artifact: Artifact) -> _Found:
        """The environment's definition: the daemon's, else the one in the
        pipeline file of the run that built ``artifact``. NotFound otherwise."""
        spec = self.config.environments.get(name)
        if spec is not None:
            return _Found(spec, "the daemon's configuration")
        run = await self.runs.get_run(artifact.run_id)
        if run is not None:
            pipeline = PipelineSpec.model_validate_json(run.spec_json)
            spec = pipeline.environments.get(name)
            if spec is not None:
                return _Found(
                    spec, f"pipeline {pipeline.name} ({run.pipeline_path} at {run.commit[:12]})"
                )
            known = sorted({*self.config.environments, *pipeline.environments})
        else:
            known = sorted(self.config.environments)
        raise NotFound(
            f"no environment {name!r}: neither the daemon's configuration nor the pipeline"
            f" file of run {artifact.run_id} (which built {artifact.digest[:19]}) defines it"
            f" (environments: {', '.join(known) or 'none'})",
            field="environment",
        )

    def _target(self, spec: EnvironmentSpec, name: str, artifact: Artifact) -> DeployTarget:
        target = self.targets.get(spec.target)
        if target is None:
            raise FailedPrecondition(
                f"environment {name} uses deploy target {spec.target!r}, which is not installed"
                f" (installed: {', '.join(sorted(self.targets)) or 'none'})",
                field="environment",
            )
        if artifact.kind not in tuple(target.artifact_kinds):
            raise FailedPrecondition(
                f"the {spec.target} target of environment {name} runs"
                f" {' or '.join(target.artifact_kinds)} artifacts; {artifact.digest[:19]} is a"
                f" {artifact.kind}",
                field="artifact",
            )
        return target

    async def environment_of(self, record: DeploymentRecord) -> Environment | None:
        """The environment a stored deployment ran, resolved again (its
        stored definition and env file values, the secrets as they are now);
        None when it cannot be (the artifact or a secret is gone)."""
        try:
            artifact = await self.catalog.store.get(record.digest)
            if artifact is None:
                return None
            resolved = await self._resolve_again(record, artifact)
        except (ConveyorError, ValueError, KeyError) as exc:
            log.warning("deployment %s cannot be resolved again: %s", record.id, exc)
            return None
        return resolved.environment

    async def _resolve_again(self, record: DeploymentRecord, artifact: Artifact) -> envs.Resolved:
        """The environment ``record`` ran, as stored with it (definition and
        env file values), resolved for ``artifact`` with today's secrets.
        Raises what :func:`environments.resolve` raises."""
        spec, file_config, source = envs.from_snapshot(record.environment_json)
        return await envs.resolve(
            record.environment,
            spec,
            artifact,
            source=source,
            store=self.config.artifacts_dir,
            secrets=self.secrets,
            file_config=file_config,
        )

    async def _artifact(self, reference: str) -> Artifact:
        reference = reference.strip()
        if not reference:
            raise InvalidArgument(
                "artifact is required (a digest, NAME:TAG or NAME@digest)", field="artifact"
            )
        return await self.catalog.find(reference)

    async def _check_built(self, artifact: Artifact, calling_run: str) -> None:
        """The artifact's run succeeded (or it is the calling run itself),
        and its provenance verifies with the daemon's key."""
        if artifact.run_id != calling_run:
            run = await self.runs.get_run(artifact.run_id)
            status = run.status if run is not None else None
            if status is not RunStatus.SUCCEEDED:
                state = status.value if status is not None else "unknown"
                raise FailedPrecondition(
                    f"{artifact.digest} was built by run {artifact.run_id}, which is {state}:"
                    " only artifacts of successful runs are deployed",
                    field="artifact",
                )
        try:
            await trio.to_thread.run_sync(
                lambda: verify_envelope(
                    artifact.provenance, self.catalog.key.public, subject_digest=artifact.digest
                )
            )
        except VerificationError as exc:
            raise FailedPrecondition(
                f"the provenance of {artifact.digest} does not verify: {exc}", field="artifact"
            ) from None

    @contextlib.contextmanager
    def _claim(self, name: str, what: str) -> Iterator[None]:
        """Hold the environment while a request works on it (in memory)."""
        busy = self.rollouts.busy.get(name)
        if busy is not None:
            raise FailedPrecondition(
                f"environment {name} is busy ({busy}); wait until it is done", field="environment"
            )
        self.rollouts.busy[name] = what
        try:
            yield
        finally:
            if self.rollouts.busy.get(name) == what:
                del self.rollouts.busy[name]

    async def _check_idle(self, name: str) -> None:
        active = await self.store.active(name)
        if active is not None:
            what = "waits for approval" if active.status is S.PENDING_APPROVAL else "is in progress"
            raise FailedPrecondition(
                f"deployment {active.id} of {active.version} to {name} {what}; one deployment"
                " at a time per environment",
                field="environment",
            )

    # -- deploy, promote, roll back ------------------------------------------------------

    async def deploy(
        self,
        environment: str,
        artifact: str,
        *,
        deployer: str,
        carrier: Mapping[str, str] | None = None,
        calling_run: str = "",
    ) -> DeploymentRecord:
        """Deploy the artifact ``artifact`` names to ``environment``.

        Raises InvalidArgument (a malformed name or reference), NotFound (no
        such artifact or environment) and FailedPrecondition (the
        environment takes only promotions, is busy, runs another kind of
        artifact; the artifact's run did not succeed or its provenance
        does not verify).
        """
        self._check_name(environment, "environment")
        found_artifact = await self._artifact(artifact)
        found = await self._spec_for(environment, found_artifact)
        if found.spec.promote_from:
            raise FailedPrecondition(
                f"environment {environment} takes only promotions from"
                f" {found.spec.promote_from}: conveyor promote {found.spec.promote_from}"
                f" {environment}",
                field="environment",
            )
        return await self._create(
            environment,
            found_artifact,
            found,
            kind=DeploymentKind.DEPLOY,
            deployer=deployer,
            carrier=carrier,
            calling_run=calling_run,
        )

    async def promote(
        self,
        source: str,
        environment: str,
        *,
        deployer: str,
        carrier: Mapping[str, str] | None = None,
        calling_run: str = "",
    ) -> DeploymentRecord:
        """Deploy to ``environment`` the digest that runs, healthy, in
        ``source``. FailedPrecondition when nothing healthy runs there (or it
        does not answer its health check now), when ``environment`` takes
        promotions from another environment, and as for :meth:`deploy`."""
        self._check_name(source, "from_environment")
        self._check_name(environment, "environment")
        if source == environment:
            raise InvalidArgument(
                "an environment cannot be promoted to itself", field="environment"
            )
        current = await self.store.current(source)
        if current is None:
            never = source not in await self.store.environments()
            raise FailedPrecondition(
                f"nothing healthy runs in {source}"
                + (" (nothing was ever deployed there)" if never else "")
                + ": there is nothing to promote",
                field="from_environment",
            )
        source_env = await self.environment_of(current)
        if source_env is not None and source not in self.rollouts.busy:
            probe = await self.rollouts.front_probe(source_env)
            if not probe.healthy:
                raise FailedPrecondition(
                    f"{source} runs {current.version} (deployment {current.id}) but does not"
                    f" answer its health check now ({probe.detail}): nothing healthy to promote",
                    field="from_environment",
                )
        artifact = await self.catalog.store.get(current.digest)
        if artifact is None:
            raise NotFound(
                f"the artifact {current.digest} is no longer recorded", field="from_environment"
            )
        found = await self._spec_for(environment, artifact)
        if found.spec.promote_from and found.spec.promote_from != source:
            raise FailedPrecondition(
                f"environment {environment} takes promotions from {found.spec.promote_from},"
                f" not from {source}",
                field="from_environment",
            )
        return await self._create(
            environment,
            artifact,
            found,
            kind=DeploymentKind.PROMOTE,
            deployer=deployer,
            carrier=carrier,
            calling_run=calling_run,
            source_environment=source,
        )

    async def rollback(
        self,
        environment: str,
        to: str,
        *,
        deployer: str,
        carrier: Mapping[str, str] | None = None,
    ) -> DeploymentRecord:
        """Deploy again an earlier healthy deployment of ``environment`` (its
        digest and configuration): ``to`` is a deployment id, or
        ``previous`` (or empty): the latest healthy one before the current
        one that runs something else."""
        self._check_name(environment, "environment")
        to = to.strip() or PREVIOUS
        if to == PREVIOUS:
            earlier = await self._previous_healthy(environment)
        else:
            if not _ID_RE.match(to):
                raise InvalidArgument(
                    f"to {to!r} is neither 'previous' nor a deployment id", field="to"
                )
            found = await self.store.get(to, events=False)
            if found is None:
                raise NotFound(f"no deployment {to}", field="to")
            earlier = found
            if earlier.environment != environment:
                raise FailedPrecondition(
                    f"deployment {to} was to {earlier.environment}, not {environment}", field="to"
                )
            if earlier.status is not S.HEALTHY:
                raise FailedPrecondition(
                    f"deployment {to} is {earlier.status.value}: only a deployment that became"
                    " healthy can be rolled back to",
                    field="to",
                )
        artifact = await self.catalog.store.get(earlier.digest)
        if artifact is None:
            raise NotFound(f"the artifact {earlier.digest} is no longer recorded", field="to")
        spec, file_config, source = envs.from_snapshot(earlier.environment_json)
        return await self._create(
            environment,
            artifact,
            _Found(spec, source),
            kind=DeploymentKind.ROLLBACK,
            deployer=deployer,
            carrier=carrier,
            calling_run=artifact.run_id,
            restores=earlier,
            file_config=file_config,
        )

    async def _previous_healthy(self, environment: str) -> DeploymentRecord:
        current = await self.store.current(environment)
        if current is None:
            raise FailedPrecondition(
                f"nothing healthy runs in {environment}: there is nothing to roll back from",
                field="environment",
            )
        before = ""
        while True:
            page = await self.store.list_deployments(
                DeploymentFilter(environment=environment), limit=100, before_id=before or current.id
            )
            for record in page:
                if record.status is S.HEALTHY and (record.digest, record.config_hash) != (
                    current.digest,
                    current.config_hash,
                ):
                    return record
            if len(page) < 100:
                raise FailedPrecondition(
                    f"{environment} has no earlier healthy deployment of another version than"
                    f" {current.version} (deployment {current.id})",
                    field="to",
                )
            before = page[-1].id

    async def _create(
        self,
        environment: str,
        artifact: Artifact,
        found: _Found,
        *,
        kind: DeploymentKind,
        deployer: str,
        carrier: Mapping[str, str] | None,
        calling_run: str,
        source_environment: str = "",
        restores: DeploymentRecord | None = None,
        file_config: Mapping[str, str] | None = None,
    ) -> DeploymentRecord:
        """Check, resolve and record a deployment, then start its rollout
        (or its wait for approval)."""
        target = self._target(found.spec, environment, artifact)
        with self._claim(environment, "a deployment being prepared"):
            await self._check_idle(environment)
            await self._check_built(artifact, calling_run)
            resolved = await envs.resolve(
                environment,
                found.spec,
                artifact,
                source=found.source,
                store=self.config.artifacts_dir,
                secrets=self.secrets,
                file_config=file_config,
            )
            previous = await self.store.current(environment)
            record = await self._record(
                environment,
                artifact,
                resolved,
                kind=kind,
                deployer=deployer,
                previous=previous,
                source_environment=source_environment,
                restores=restores,
                carrier=carrier,
                held=found.spec.requires_approval,
            )
        if record.status is S.PENDING_APPROVAL:
            self._spawn(self._expire_later, record)
        else:
            self._start(record, resolved.environment, previous)
        log.info(
            "deployment %s: %s %s to %s by %s (%s)",
            record.id,
            kind.value,
            artifact.digest,
            environment,
            deployer,
            target.name,
        )
        return record

    async def _record(
        self,
        environment: str,
        artifact: Artifact,
        resolved: envs.Resolved,
        *,
        kind: DeploymentKind,
        deployer: str,
        previous: DeploymentRecord | None,
        source_environment: str = "",
        restores: DeploymentRecord | None = None,
        cause: DeploymentRecord | None = None,
        carrier: Mapping[str, str] | None = None,
        held: bool = False,
        reason: str = "",
    ) -> DeploymentRecord:
        env = resolved.environment
        commits: list[Commit] = []
        reverted: list[Commit] = []
        total = 0
        if previous is not None:
            commits, total = await gitfacts.commits_between(
                artifact.repository, previous.commit, artifact.commit
            )
            reverted, back = await gitfacts.commits_between(
                artifact.repository, artifact.commit, previous.commit
            )
            total += back
        now = time.time()
        status = S.PENDING_APPROVAL if held else S.PROGRESSING
        record = DeploymentRecord(
            id=new_deployment_id(),
            environment=environment,
            pipeline=artifact.pipeline,
            kind=kind,
            digest=artifact.digest,
            artifact_name=artifact.name,
            artifact_kind=artifact.kind,
            version=artifact.version,
            commit=artifact.commit,
            repository=artifact.repository,
            run_id=artifact.run_id,
            run_number=artifact.run_number,
            deployer=deployer,
            target=env.target,
            replicas=env.replicas,
            status=status,
            created_at=now,
            commit_time=await gitfacts.commit_time(artifact.repository, artifact.commit),
            source_environment=source_environment,
            previous_id=previous.id if previous is not None else "",
            previous_digest=previous.digest if previous is not None else "",
            restores_id=restores.id if restores is not None else "",
            cause_id=cause.id if cause is not None else "",
            commits=commits,
            reverted=reverted,
            commits_total=total,
            config_hash=env.config_hash,
            config_changed=previous is None or previous.config_hash != env.config_hash,
            environment_json=resolved.snapshot,
            approval_expires_at=now + resolved.spec.approval_expiry if held else None,
        )
        if self.tracing is not None:
            record.trace_id, record.span_id = self.tracing.start(
                record, artifact_trace=(artifact.trace_id, artifact.span_id), carrier=carrier
            )
        version = f"{artifact.name} {artifact.version}"
        what = {
            DeploymentKind.DEPLOY: f"deploy {version}",
            DeploymentKind.PROMOTE: f"promote {version} from {source_environment}",
            DeploymentKind.ROLLBACK: f"roll back to {version} (deployment {record.restores_id})",
            DeploymentKind.RESTORE: f"restore {version} (deployment {record.restores_id})",
        }[kind]
        message = reason or f"{what} to {environment}, asked by {deployer}"
        if held:
            until = time.localtime(record.approval_expires_at)
            message += f"; waits for approval until {time.strftime('%Y-%m-%d %H:%M:%S', until)}"
        return await self.store.create(record, message)

    def _start(
        self, record: DeploymentRecord, env: Environment, previous: DeploymentRecord | None
    ) -> None:
        self.rollouts.busy[record.environment] = f"deployment {record.id}"
        self._spawn(self._rollout, record, env, previous)

    async def _rollout(
        self, record: DeploymentRecord, env: Environment, previous: DeploymentRecord | None
    ) -> None:
        try:
            previous_env = await self.environment_of(previous) if previous is not None else None
            await self.rollouts.run(record, env, previous, previous_env, self._make_restore)
        except Exception as exc:
            log.exception("deployment %s failed unexpectedly", record.id)
            with contextlib.suppress(StaleTransition):
                await self.ledger.move(record.id, S.FAILED, f"the daemon failed: {exc!r}")
        finally:
            if self.rollouts.busy.get(record.environment) == f"deployment {record.id}":
                del self.rollouts.busy[record.environment]

    async def _make_restore(
        self, previous: DeploymentRecord, failed: DeploymentRecord, reason: str
    ) -> DeploymentRecord:
        artifact = await self.catalog.store.get(previous.digest)
        if artifact is None:
            raise FailedPrecondition(f"the artifact {previous.digest} is no longer recorded")
        resolved = await self._resolve_again(previous, artifact)
        return await self._record(
            previous.environment,
            artifact,
            resolved,
            kind=DeploymentKind.RESTORE,
            deployer="conveyor (automatic rollback)",
            previous=failed,
            restores=previous,
            cause=failed,
            reason=f"automatic rollback of deployment {failed.id}: {reason}",
        )

    # -- approvals -------------------------------------------------------------------

    async def _pending(self, deployment_id: str) -> DeploymentRecord:
        if not _ID_RE.match(deployment_id or ""):
            raise InvalidArgument(
                f"deployment_id {deployment_id!r} is not a deployment id", field="deployment_id"
            )
        record = await self.store.get(deployment_id, events=False)
        if record is None:
            raise NotFound(f"no deployment {deployment_id}", field="deployment_id")
        if record.status is not S.PENDING_APPROVAL:
            raise FailedPrecondition(
                f"deployment {deployment_id} is {record.status.value}: only a deployment"
                " pending approval can be approved or rejected",
                field="deployment_id",
            )
        if record.approval_expires_at is not None and record.approval_expires_at <= time.time():
            await self._expire(record)
            raise FailedPrecondition(
                f"deployment {deployment_id} expired: nobody approved it in time",
                field="deployment_id",
            )
        return record

    async def approve(self, deployment_id: str, comment: str, *, approver: str) -> DeploymentRecord:
        """Let a deployment pending approval roll out."""
        record = await self._pending(deployment_id)
        env = await self.environment_of(record)
        if env is None:
            raise FailedPrecondition(
                f"deployment {deployment_id} can no longer be resolved (its artifact or a"
                " secret is gone); reject it",
                field="deployment_id",
            )
        with self._claim(record.environment, f"the approval of deployment {record.id}"):
            moved = await self._decide(record, S.PROGRESSING, "approved", approver, comment)
            previous = (
                await self.store.get(record.previous_id, events=False)
                if record.previous_id
                else None
            )
        self._start(moved, env, previous)
        return moved

    async def reject(self, deployment_id: str, comment: str, *, approver: str) -> DeploymentRecord:
        """Refuse a deployment pending approval (nothing was started)."""
        record = await self._pending(deployment_id)
        return await self._decide(record, S.REJECTED, "rejected", approver, comment)

    async def _decide(
        self,
        record: DeploymentRecord,
        status: S,
        verb: str,
        approver: str,
        comment: str,
    ) -> DeploymentRecord:
        """Record ``approver``'s decision on a deployment pending approval:
        move it to ``status``. Raises FailedPrecondition when it has moved
        on meanwhile (expired, decided by someone else)."""
        try:
            return await self.ledger.move(
                record.id,
                status,
                f"{verb} by {approver}" + (f": {comment}" if comment else ""),
                decided_by=approver,
                decided_at=time.time(),
                decision_comment=comment,
            )
        except StaleTransition as exc:
            raise FailedPrecondition(
                f"deployment {record.id} is {exc.status.value} now", field="deployment_id"
            ) from None

    async def _expire_later(self, record: DeploymentRecord) -> None:
        expires = record.approval_expires_at or time.time()
        await trio.sleep(max(0.0, expires - time.time()))
        await self._expire(record)

    async def _expire(self, record: DeploymentRecord) -> None:
        waited = (record.approval_expires_at or time.time()) - record.created_at
        with contextlib.suppress(StaleTransition):
            await self.ledger.move(
                record.id, S.EXPIRED, f"nobody approved it within {waited:g}s (approval_expiry)"
            )

    # -- queries ---------------------------------------------------------------------

    async def get(self, deployment_id: str) -> DeploymentRecord:
        if not _ID_RE.match(deployment_id or ""):
            raise InvalidArgument(
                f"deployment_id {deployment_id!r} is not a deployment id", field="deployment_id"
            )
        record = await self.store.get(deployment_id)
        if record is None:
            raise NotFound(f"no deployment {deployment_id}", field="deployment_id")
        return record

    async def list_deployments(
        self, environment: str, digest: str, page_size: int, page_token: str
    ) -> tuple[list[DeploymentRecord], str]:
        """Newest first; the next page's token ("" at the end)."""
        if environment:
            self._check_name(environment, "environment")
        if digest:
            digest = (await self._artifact(digest)).digest
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be between 1 and {MAX_PAGE_SIZE}", field="page_size"
            )
        if page_token and not _ID_RE.match(page_token):
            raise InvalidArgument("page_token is malformed", field="page_token")
        size = page_size or DEFAULT_PAGE_SIZE
        records = await self.store.list_deployments(
            DeploymentFilter(environment=environment, digest=digest),
            limit=size + 1,
            before_id=page_token,
        )
        token = records[size - 1].id if len(records) > size else ""
        return records[:size], token

    async def environment_names(self) -> list[str]:
        return sorted({*self.config.environments, *await self.store.environments()})

    async def get_environment(self, name: str, *, live: bool = True) -> EnvironmentView:
        """What runs in ``name``, since when, and (``live``) how healthy it
        is now (its replicas and its front port probed once)."""
        self._check_name(name, "environment")
        current = await self.store.current(name)
        active = await self.store.active(name)
        latest = await self.store.list_deployments(DeploymentFilter(environment=name), limit=1)
        if not latest and name not in self.config.environments:
            raise NotFound(
                f"no environment {name!r}: it is not in the daemon's configuration and nothing"
                " was ever deployed there",
                field="environment",
            )
        spec: EnvironmentSpec | None = self.config.environments.get(name)
        source = "the daemon's configuration" if spec is not None else ""
        known = current or (latest[0] if latest else None)
        if spec is None and known is not None:
            spec, _, source = envs.from_snapshot(known.environment_json)
        view = EnvironmentView(
            name=name,
            spec=spec,
            source=source,
            current=current,
            since=(current.healthy_at or current.finished_at) if current is not None else None,
            active=active,
            busy=self.rollouts.busy.get(name, ""),
        )
        if not live or current is None:
            return view
        env = await self.environment_of(current)
        if env is None:
            return view
        replicas = await self.rollouts.live_replicas(env)
        front = await self.rollouts.front_probe(env)
        in_traffic = [
            r for r in replicas if r.replica.deployment_id and r.replica.state == "running"
        ]
        healthy = front.healthy and bool(in_traffic) and all(r.healthy for r in in_traffic)
        detail = f"front 127.0.0.1:{env.port}: {front.detail}"
        if not in_traffic:
            detail += "; no replica runs"
        return EnvironmentView(
            name=view.name,
            spec=view.spec,
            source=view.source,
            current=current,
            since=view.since,
            active=active,
            replicas=replicas,
            healthy=healthy,
            health_detail=detail,
            busy=view.busy,
        )

    async def _known(self, name: str) -> list[DeploymentRecord]:
        """The environment's latest deployment (none yet: []); NotFound when
        it is neither configured nor ever deployed to."""
        self._check_name(name, "environment")
        latest = await self.store.list_deployments(DeploymentFilter(environment=name), limit=1)
        if not latest and name not in self.config.environments:
            raise NotFound(
                f"no environment {name!r}: it is not in the daemon's configuration and nothing"
                " was ever deployed there",
                field="environment",
            )
        return latest

    async def stop_environment(self, name: str, *, by: str) -> StopResult:
        """Stop what ``name`` runs (its replicas and front proxy) and mark
        the deployment that ran there stopped: the environment runs nothing
        until its next deployment, also after a restart. Nothing running is
        not an error. FailedPrecondition while a deployment is in progress
        or waits for approval, or when its target cannot stop environments."""
        latest = await self._known(name)
        with self._claim(name, "being stopped"):
            await self._check_idle(name)
            current = await self.store.current(name)
            places: dict[tuple[str, int], float] = {}
            for record in {r.id: r for r in [*latest, *([current] if current else [])]}.values():
                spec, _, _ = envs.from_snapshot(record.environment_json)
                places[spec.target, spec.port] = spec.stop_grace
            configured = self.config.environments.get(name)
            if configured is not None:
                places.setdefault((configured.target, configured.port), configured.stop_grace)
            about = current.id if current is not None else ""

            async def note(message: str) -> None:
                if about:
                    await self.ledger.note(about, message)

            try:
                replicas, proxy = await self.rollouts.stop_environment(
                    name, [(t, port, grace) for (t, port), grace in places.items()], note
                )
            except TargetError as exc:
                raise FailedPrecondition(
                    f"environment {name} cannot be stopped: {exc}", field="environment"
                ) from None
            stopped = None
            if current is not None:
                await self.store.update(current.id, stopped_at=time.time(), stopped_by=by)
                await self.ledger.note(
                    current.id, f"environment {name} stopped by {by}: it runs nothing now"
                )
                stopped = await self.store.get(current.id, events=False)
        log.info("environment %s stopped by %s (%d replica(s))", name, by, replicas)
        return StopResult(name, stopped, replicas, proxy)

    async def dora(self, name: str, window: float | None = None) -> DoraFigures:
        """The DORA figures of ``name`` over the ``window`` seconds up to now
        (default: the ``dora_window_days`` setting). NotFound for an
        unknown environment; InvalidArgument for a window out of range."""
        await self._known(name)
        if window is None:
            window = self.config.dora_window_days * dora.DAY
        if not MIN_DORA_WINDOW <= window <= MAX_DORA_WINDOW:
            raise InvalidArgument(
                f"window must be between {MIN_DORA_WINDOW:g} seconds and"
                f" {MAX_DORA_WINDOW / dora.DAY:g} days; got {window:g} seconds",
                field="window",
            )
        return await dora.compute(self.store, name, window=window, end=time.time())

    # -- following ---------------------------------------------------------------------

    async def follow(
        self, deployment_id: str, sink: Callable[[str], Awaitable[None]] | None = None
    ) -> DeploymentRecord:
        """Wait until the deployment reaches a final status; its log lines
        and transitions from now on go to ``sink``. Returns it then."""
        if sink is not None:
            self.ledger.add_sink(deployment_id, sink)
        try:
            while True:
                changed = self.ledger.changed(deployment_id)
                record = await self.store.get(deployment_id, events=False)
                if record is None:
                    raise NotFound(f"no deployment {deployment_id}")
                if record.status.finished:
                    return record
                await changed.wait()
        finally:
            if sink is not None:
                self.ledger.remove_sink(deployment_id, sink)

    async def watch(self, deployment_id: str) -> AsyncIterator[DeploymentRecord]:
        """The deployment now, then again at each change, until it ends."""
        while True:
            changed = self.ledger.changed(deployment_id)
            record = await self.get(deployment_id)
            yield record
            if record.status.finished:
                return
            await changed.wait()

    def for_stage(
        self,
        run_id: str,
        log_line: Callable[[str], Awaitable[None]],
        env: Mapping[str, str],
        submitted_by: str = "",
    ) -> StageDeployments:
        """``ctx.deployments`` of a stage of run ``run_id``, deploying on
        behalf of ``submitted_by``."""
        carrier = {
            key.lower(): value for key, value in env.items() if key in ("TRACEPARENT", "TRACESTATE")
        }
        return StageDeployments(self, run_id, log_line, carrier, submitted_by)


class StageDeployments:
    """What a stage deploys with: the service, on behalf of its run."""

    def __init__(
        self,
        service: DeliveryService,
        run_id: str,
        log_line: Callable[[str], Awaitable[None]],
        carrier: Mapping[str, str],
        submitted_by: str = "",
    ) -> None:
        self._service = service
        self._run_id = run_id
        self._log_line = log_line
        self._carrier = carrier
        self._submitted_by = submitted_by

    async def deploy(
        self, environment: str, artifact: str, *, promote_from: str = ""
    ) -> Deployment:
        # the run's submitter, whose right to deploy there was checked when
        # the run was submitted (service.check_deploy_rights)
        deployer = (
            f"{self._submitted_by} (run {self._run_id})"
            if self._submitted_by
            else f"run:{self._run_id}"
        )
        try:
            if promote_from:
                record = await self._service.promote(
                    promote_from,
                    environment,
                    deployer=deployer,
                    carrier=self._carrier,
                    calling_run=self._run_id,
                )
            else:
                record = await self._service.deploy(
                    environment,
                    artifact,
                    deployer=deployer,
                    carrier=self._carrier,
                    calling_run=self._run_id,
                )
        except ConveyorError as exc:
            raise DeploymentError(str(exc)) from None
        await self._log_line(
            f"deployment {record.id}: {record.status.value}"
            + (
                f" (approve it: conveyor approve {record.id})"
                if record.status is S.PENDING_APPROVAL
                else ""
            )
        )
        final = await self._service.follow(record.id, self._log_line)
        return deployment_view(final)


__all__ = ["DeliveryService", "EnvironmentView", "StageDeployments", "StopResult"]
