"""Executes one run: checkout, then the stage DAG with retries and timeouts.

Cancellation: the run executes inside its :class:`RunControl`'s cancel scope.
When it is cancelled, every stage task records its stage as cancelled (or
interrupted, on shutdown) in a shielded scope before re-raising, and the
run is recorded last; a run-level timeout records stages and run as timed
out. Nothing is ever recorded as succeeded unless it ran and succeeded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from conveyor.daemon import vcs
from conveyor.daemon.artifacts.recorder import ArtifactDeps, RunArtifacts
from conveyor.daemon.config import Config
from conveyor.daemon.delivery.service import DeliveryService
from conveyor.daemon.errors import ConveyorError
from conveyor.daemon.executors import stage_user
from conveyor.daemon.executors.base import (
    CONTAINER_WORKSPACE,
    LABEL_DAEMON,
    LABEL_RUN,
    LABEL_STAGE,
    ContainerSpec,
    Executor,
    ExecutorError,
    LogOutput,
    MaskedOutput,
    ProcessKilled,
    ProcessRequest,
    StageOutput,
    StageUser,
    container_fields,
    conveyor_line,
)
from conveyor.daemon.executors.process import STAGE_MARKER, stage_marker
from conveyor.daemon.logstore import LogStore
from conveyor.daemon.pipeline import PipelineSpec, StageSpec
from conveyor.daemon.plugins import Plugins
from conveyor.daemon.records import EventKind, RunRecord, RunStatus, StageRecord, StageStatus
from conveyor.daemon.scheduler.control import RunControl, is_cancellation
from conveyor.daemon.scheduler.journal import Journal
from conveyor.daemon.secrets.providers import Secrets
from conveyor.daemon.secrets.redaction import REDACTOR, redact, redact_report
from conveyor.daemon.spare_workspaces import SpareWorkspaces
from conveyor.daemon.stages import StageContext, StageKind, StageOutcome
from conveyor.daemon.store.database import out_of_space
from conveyor.daemon.store.runs import EventDraft, Update
from conveyor.daemon.telemetry.tracing import RunTracing
from conveyor.daemon.views import RunViews

log = logging.getLogger(__name__)


@dataclass
class SchedulerStats:
    active_stages: int = 0


@dataclass
class RunDeps:
    """What executing a run needs from the daemon."""

    config: Config
    journal: Journal
    logs: LogStore
    plugins: Plugins
    #: The daemon environment variables handed to stages.
    base_env: Mapping[str, str]
    tracing: RunTracing
    stats: SchedulerStats = field(default_factory=SchedulerStats)
    #: The artifact store and signing key; None records no artifacts.
    artifacts: ArtifactDeps | None = None
    #: The secrets stages may ask for.
    secrets: Secrets = field(default_factory=Secrets)
    #: The user stage processes run as (setting ``stage_user``), or None.
    stage_user: StageUser | None = None
    #: Deployments, for ``ctx.deployments``; None: stages cannot deploy.
    delivery: DeliveryService | None = None
    #: The daemon's id, on what container executors make (``LABEL_DAEMON``).
    daemon_id: str = ""
    #: Workspaces made ahead of time; None: each checkout makes its own.
    spares: SpareWorkspaces | None = None
    #: The kept git readers, shared with the API's submits: a checkout of a
    #: small plain tree reads it there (see vcs.checkout); None: git does.
    git_readers: vcs.CatFiles | None = None


#: The uid and gid containers run as by default when the daemon runs as root
#: without a stage user (``nobody``/``nogroup``).
NOBODY = 65534


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


class RunExecution:
    def __init__(
        self,
        deps: RunDeps,
        run: RunRecord,
        spec: PipelineSpec,
        control: RunControl,
        *,
        tags: tuple[str, ...] | None = None,
    ):
        self.deps = deps
        #: The release tags on the run's commit when it was submitted; None:
        #: read them when it starts.
        self.tags = tags
        self.run = run
        self.spec = spec
        self.control = control
        self.workspace = deps.config.workspaces_dir / run.id
        #: Stage reports live beside the workspace, so tools that scan the
        #: workspace never see them.
        self.reports_root = deps.config.workspaces_dir / f"{run.id}.reports"
        #: The stage user's home during the run (only with a stage user).
        self.run_home = deps.config.workspaces_dir / f"{run.id}.home"
        #: What stages get in their environment for the stage user.
        self.user_env: dict[str, str] = {}
        #: Every secret some stage of the run asks for: the run's stage logs
        #: are masked for all of them (a value one stage leaves in the
        #: workspace may be printed by another).
        self.secret_names = sorted(
            {secret for name in spec.stages for secret in spec.stage_secrets(name)}
        )
        self.done = {stage.name: trio.Event() for stage in run.stages}
        #: ``error.type`` of the run's span when it does not succeed.
        self.error_type = ""
        #: The uid:gid the workspace was last handed over to, for containers.
        self.workspace_user: tuple[int, int] | None = None
        self.handing_over = trio.Lock()
        self.artifacts = RunArtifacts(deps.artifacts, run, spec, self.workspace, deps.plugins)
        #: What stage attempts see of the run (``ctx.run``).
        self.views = RunViews(run)
        #: When the run left the queue: its ``started_at`` once checked out.
        self._left_queue_at = time.time()
        #: The close-out has begun: a stage finishing now is recorded at once.
        self._closing = False
        #: The last stage to finish, its outcome and the update storing it,
        #: left for the close-out to store with the run's final record.
        self._last_finished: tuple[StageRecord, StageOutcome, Update] | None = None

    # -- recording -----------------------------------------------------------

    async def _write(self, *updates: Update) -> None:
        """Store ``updates`` in one transaction, then tell watchers."""
        events = await self.deps.journal.record_all(self.run.id, list(updates))
        self.run.last_event_seq = max(self.run.last_event_seq, events[-1].seq)

    def _run_change(self, status: RunStatus, reason: str = "", **columns: Any) -> Update:
        """Apply the run's new status to its record in memory now; return
        the update that stores it."""
        reason = redact(reason)
        self.run.status = status
        self.run.reason = reason
        for key, value in columns.items():
            setattr(self.run, key, value)
        return Update(
            EventDraft(EventKind.RUN_STATUS, run_status=status, message=reason),
            run={"status": status, "reason": reason, **columns},
        )

    async def _record_run(self, status: RunStatus, reason: str = "", **columns: Any) -> None:
        await self._write(self._run_change(status, reason, **columns))

    def _stage_change(
        self, stage: StageRecord, status: StageStatus, reason: str = "", **columns: Any
    ) -> Update:
        """Apply a stage's new status to the run's records in memory now;
        return the update that stores it (and its event, then told to
        watchers) for the caller to write."""
        reason = redact(reason)
        stage.status = status
        stage.reason = reason
        for key, value in columns.items():
            if hasattr(stage, key):
                setattr(stage, key, value)
        self.views.changed(stage.name)
        draft = EventDraft(
            EventKind.STAGE_STATUS,
            stage=stage.name,
            stage_status=status,
            attempt=stage.attempt,
            exit_code=stage.exit_code,
            message=reason,
        )
        return Update(draft, stage={"status": status, "reason": reason, **columns})

    async def _finish_stage(self, stage: StageRecord, outcome: StageOutcome) -> None:
        """Record a stage's final status, close its log and span, tell plugins.

        The run's last stage to finish (every other one has finished, so no
        stage waits for it) leaves all that to the run's close-out: its
        record is stored with the run's final one, in one transaction."""
        live = self.deps.logs.live(self.run.id, stage.name)
        log_size = live.size if live is not None else stage.log_size
        report = outcome.report.capped() if outcome.report is not None else None
        stage.report = report
        update = self._stage_change(
            stage,
            outcome.status,
            outcome.reason,
            exit_code=outcome.exit_code,
            finished_at=time.time(),
            log_size=log_size,
            report_json=report.to_json() if report is not None else None,
        )
        if not self._closing and all(
            other.status.finished for other in self.run.stages if other is not stage
        ):
            self._last_finished = (stage, outcome, update)
            return
        starting = self._starting_after(stage) if not self._closing else []
        await self._write(update, *starting)
        self._stage_finished(stage, outcome)

    def _starting_after(self, stage: StageRecord) -> list[Update]:
        """The `running` records of the stages that ``stage``, just
        succeeded, lets start (their other needs' success is stored), to
        store with its final record: one transaction where each would have had
        its own, and a stage's process still starts only once its needs'
        final records and its own `running` one are stored. A stage that
        may end before it runs (its kind, executor or secrets missing, a
        container to prepare) records its own start, or end, as before."""
        if stage.status is not StageStatus.SUCCEEDED:
            return []
        updates = []
        for other in self.run.stages:
            if (
                other.status is StageStatus.PENDING
                and stage.name in other.needs
                and all(self._succeeded(need) for need in other.needs if need != stage.name)
                and self._runs_at_once(other)
            ):
                updates.append(
                    self._stage_change(
                        other,
                        StageStatus.RUNNING,
                        attempt=1,
                        exit_code=None,
                        started_at=time.time(),
                    )
                )
        return updates

    def _succeeded(self, name: str) -> bool:
        """Whether stage ``name`` succeeded and that is stored (its task is done)."""
        return self.done[name].is_set() and self.run.stage(name).status is StageStatus.SUCCEEDED

    def _runs_at_once(self, stage: StageRecord) -> bool:
        """Whether ``stage`` goes straight to its first attempt once its
        needs succeeded (see :meth:`_run_stage` and :meth:`_attempts`)."""
        deps = self.deps
        spec = self.spec.stages[stage.name]
        executor = deps.plugins.executors.get(spec.executor or self.spec.executor)
        if spec.uses not in deps.plugins.stage_kinds or executor is None:
            return False
        if container_fields(executor):
            return False
        _, missing = deps.secrets.values(self.spec.stage_secrets(stage.name))
        return not missing

    def _stage_finished(self, stage: StageRecord, outcome: StageOutcome) -> None:
        """What follows a stage's final record: its log closed, its span
        ended, plugins told."""
        self.deps.logs.release(self.run.id, stage.name)
        tracing = self.deps.tracing
        if stage.report is not None:
            tracing.stage_event(
                self.run.id,
                stage.name,
                "gate",
                {"passed": stage.report.gate_passed, "reason": stage.report.gate_reason},
            )
        tracing.end_stage(
            self.run,
            stage,
            outcome.error_type,
            system_error=outcome.system_error,
            attributes=outcome.span_attributes,
        )
        self.deps.plugins.stage_finished(self.run, stage)

    # -- the run ---------------------------------------------------------------

    async def execute(self) -> None:
        """Run to a final status, recorded even when cancelled."""
        status, reason = RunStatus.FAILED, "run did not complete"
        self._left_queue_at = time.time()
        try:
            timeout = self.spec.timeout or math.inf
            with trio.move_on_after(timeout) as timeout_scope:
                await self._start()
                self.deps.tracing.run_started(self.run)
                self.deps.plugins.run_started(self.run)
                await self._run_dag()
            if timeout_scope.cancelled_caught:
                status = RunStatus.TIMED_OUT
                reason = f"run timed out after {_fmt_seconds(timeout)}"
            else:
                status, reason = self._summarize()
        except _CheckoutFailed as exc:
            status, reason = RunStatus.FAILED, str(exc)
            self.error_type = "checkout_failed"
        except BaseException as exc:
            if is_cancellation(exc):
                status = self.control.cancel_status or RunStatus.CANCELLED
                reason = self.control.cancel_reason or "cancelled"
                self.deps.tracing.run_event(self.run.id, "cancellation", {"reason": reason})
                if status is RunStatus.INTERRUPTED:
                    self.error_type = "interrupted"
            else:
                status, reason = RunStatus.FAILED, f"internal error: {exc!r}"
                self.error_type = type(exc).__qualname__
            raise
        finally:
            # The one moment the final status is decided: a cancel accepted
            # before it wins (even over a success), one after it is refused.
            decided, reason = self.control.decide(status, reason)
            if decided is not status:
                self.error_type = ""
            with trio.CancelScope(shield=True):
                await self._close_out(decided, reason)

    async def _start(self) -> None:
        """Check out the workspace while reading the run's version (the
        commit's tags) and then recording the run running with it: the
        record commits while git works. Raises :class:`_CheckoutFailed` when
        the checkout or the version fails (the run may then be recorded
        running already; it ends failed)."""
        failures: list[str] = []

        async def read_version_and_record() -> None:
            try:
                version = await self.artifacts.version(self.tags)
            except (vcs.GitError, OSError) as exc:
                failures.append(f"checkout failed: cannot read the commit's tags: {exc}")
                return
            await self._record_run(
                RunStatus.RUNNING, started_at=self._left_queue_at, version=version
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_version_and_record)
            try:
                await self._checkout()
            except _CheckoutFailed as exc:
                failures.insert(0, str(exc))
        if failures:
            raise _CheckoutFailed(failures[0])

    async def _checkout(self) -> None:
        user = self.deps.stage_user
        try:
            await vcs.checkout(
                Path(self.run.repository),
                self.workspace,
                self.run.commit,
                user=user,
                spares=self.deps.spares,
                readers=self.deps.git_readers,
            )
            if user is not None:
                await trio.to_thread.run_sync(stage_user.make_run_home, self.run_home, user)
                self.user_env = await trio.to_thread.run_sync(
                    stage_user.stage_environment, user, self.workspace, self.run_home
                )
        except (vcs.GitError, OSError, ConveyorError) as exc:
            # ConveyorError: the repository is gone, or cannot be read, since the submit
            raise _CheckoutFailed(f"checkout failed: {exc}") from exc

    def _summarize(self) -> tuple[RunStatus, str]:
        for stage in self.run.stages:
            if stage.status is StageStatus.TIMED_OUT:
                self.error_type = "timeout"
                return RunStatus.TIMED_OUT, f"stage {stage.name!r} {stage.reason}"
            if (
                stage.status is not StageStatus.SUCCEEDED
                and stage.status is not StageStatus.SKIPPED
            ):
                self.error_type = "stage_failure"
                return RunStatus.FAILED, f"stage {stage.name!r} failed: {stage.reason}"
        if any(stage.status is StageStatus.SKIPPED for stage in self.run.stages):
            self.error_type = "stage_failure"
            return RunStatus.FAILED, "stages were skipped"
        return RunStatus.SUCCEEDED, ""

    async def _close_out(self, status: RunStatus, reason: str) -> None:
        """Record stages that never got a final status, then the run (with
        the last stage to finish, see :meth:`_finish_stage`)."""
        self._closing = True
        for stage in self.run.stages:
            if stage.status.finished:
                continue
            if stage.status is StageStatus.RUNNING:
                # Only reachable if a stage task died without recording.
                await self._finish_stage(
                    stage, StageOutcome(StageStatus.INTERRUPTED, reason, system_error=True)
                )
            elif status is RunStatus.CANCELLED:
                await self._finish_stage(
                    stage, StageOutcome(StageStatus.CANCELLED, f"not started: {reason}")
                )
            else:
                await self._finish_stage(
                    stage, StageOutcome(StageStatus.SKIPPED, f"not started: {reason}")
                )
        final = self._run_change(status, reason, finished_at=time.time())
        if self._last_finished is None:
            await self._write(final)
        else:
            stage, outcome, update = self._last_finished
            await self._write(update, final)
            self._stage_finished(stage, outcome)
        self.deps.tracing.end_run(self.run, self.error_type)
        await trio.to_thread.run_sync(self._tidy)
        self.deps.plugins.run_finished(self.run)

    def _tidy(self) -> None:
        """Remove the run's folders (unless ``keep_workspaces``) and make a
        spare workspace for the next run in place of the one it took.
        Blocking."""
        if not self.deps.config.keep_workspaces:
            _remove_folders([self.workspace, self.reports_root, self.run_home])
        if self.deps.spares is not None:
            self.deps.spares.refill()

    async def _run_dag(self) -> None:
        async with trio.open_nursery() as nursery:
            # The stages that can start now go first, up to their first
            # write, before the others begin to wait for their needs: a
            # run's first process does not wait for every stage's task.
            waiting = [stage for stage in self.run.stages if stage.needs]
            for stage in self.run.stages:
                if not stage.needs:
                    nursery.start_soon(self._stage_task, stage)
            if waiting:
                await trio.lowlevel.checkpoint()
            for stage in waiting:
                nursery.start_soon(self._stage_task, stage)
            nursery.start_soon(self._prepare_logs, waiting)

    async def _prepare_logs(self, stages: list[StageRecord]) -> None:
        """Make the logs of the stages that wait for others, in a worker
        thread while the first ones run (see :meth:`LogStore.prepare`); the
        first ones make their own as they start. A log that cannot be made
        here is made, or fails its stage, when its stage starts."""
        if stages:
            names = [stage.name for stage in stages]
            with contextlib.suppress(OSError):
                await trio.to_thread.run_sync(self.deps.logs.prepare, self.run.id, names)

    # -- a stage ------------------------------------------------------------------

    async def _stage_task(self, stage: StageRecord) -> None:
        try:
            for need in stage.needs:
                await self.done[need].wait()
            blocked = [
                need
                for need in stage.needs
                if self.run.stage(need).status is not StageStatus.SUCCEEDED
            ]
            if blocked:
                why = f"needs {', '.join(blocked)}, which did not succeed"
                await self._finish_stage(stage, StageOutcome(StageStatus.SKIPPED, why))
                return
            await self._run_stage(stage, self.spec.stages[stage.name])
        except BaseException as exc:
            if not is_cancellation(exc):
                raise
            with trio.CancelScope(shield=True):
                if not stage.status.finished and stage.status is StageStatus.RUNNING:
                    if self.control.cancel_status is not None:
                        status = (
                            StageStatus.INTERRUPTED
                            if self.control.cancel_status is RunStatus.INTERRUPTED
                            else StageStatus.CANCELLED
                        )
                        why = self.control.cancel_reason
                    else:
                        status = StageStatus.TIMED_OUT
                        why = f"run timed out after {_fmt_seconds(self.spec.timeout or 0)}"
                    await self._log(stage, f"stage {status.value}: {why}")
                    self.deps.tracing.stage_event(
                        self.run.id, stage.name, "cancellation", {"reason": why}
                    )
                    interrupted = status is StageStatus.INTERRUPTED
                    await self._finish_stage(
                        stage,
                        StageOutcome(
                            status,
                            why,
                            error_type="interrupted" if interrupted else "",
                            system_error=interrupted,
                        ),
                    )
            raise
        finally:
            self.done[stage.name].set()

    async def _log(self, stage: StageRecord, text: str) -> None:
        output = LogOutput(self.deps.logs.open_live(self.run.id, stage.name))
        line = conveyor_line(redact(text), at_line_start=output.at_line_start)
        await self._quietly(stage.name, output.write(line))

    async def _quietly(self, stage: str, write: Awaitable[None]) -> None:
        """Await a write of the daemon's own into a stage log: a log that
        cannot take it (a full disk) loses that note, never the stage's
        outcome."""
        try:
            await write
        except OSError as exc:
            log.warning(
                "run %s stage %s: cannot write to the stage log: %s", self.run.id, stage, exc
            )

    def _stage_env(
        self, name: str, spec: StageSpec, secrets: Mapping[str, str], *, container: bool
    ) -> dict[str, str]:
        """The stage's environment. In a container, without what describes
        this machine (the daemon's variables, the stage user's home), and
        with the workspace where the container has it."""
        run = self.run
        host = not container
        return {
            **(self.deps.base_env if host else {}),
            "CI": "true",
            "CONVEYOR": "true",
            "CONVEYOR_RUN_ID": run.id,
            "CONVEYOR_RUN_NUMBER": str(run.number),
            "CONVEYOR_PIPELINE": run.pipeline,
            "CONVEYOR_REPOSITORY": run.repository,
            "CONVEYOR_REF": run.ref,
            "CONVEYOR_COMMIT": run.commit,
            "CONVEYOR_VERSION": run.version,
            "CONVEYOR_STAGE": name,
            "CONVEYOR_WORKSPACE": str(self.workspace) if host else CONTAINER_WORKSPACE,
            **(self.user_env if host else {}),
            **self.spec.env,
            **spec.env,
            **secrets,
            STAGE_MARKER: stage_marker(self.deps.config.home),
        }

    async def _run_stage(self, stage: StageRecord, spec: StageSpec) -> None:
        deps = self.deps
        kind = deps.plugins.stage_kinds.get(spec.uses)
        executor_name = spec.executor or self.spec.executor
        executor = deps.plugins.executors.get(executor_name)
        if kind is None or executor is None:
            missing = f"stage kind {spec.uses!r}" if kind is None else f"executor {executor_name!r}"
            await self._finish_stage(
                stage,
                StageOutcome(
                    StageStatus.FAILED,
                    f"{missing} is not installed",
                    error_type="not_installed",
                    system_error=True,
                ),
            )
            return
        deps.stats.active_stages += 1
        try:
            await self._attempts(stage, spec, kind, executor)
        finally:
            deps.stats.active_stages -= 1

    async def _attempts(
        self, stage: StageRecord, spec: StageSpec, kind: StageKind, executor: Executor
    ) -> None:
        deps = self.deps
        secrets, missing = deps.secrets.values(self.spec.stage_secrets(stage.name))
        if missing:
            await self._finish_stage(stage, _missing_secrets(missing))
            return
        container: ContainerSpec | None = None
        user = deps.stage_user
        if container_fields(executor):
            try:
                container, user = await self._container(stage.name)
            except ExecutorError as exc:
                await self._log(stage, str(exc))
                reason = str(exc)
                outcome = StageOutcome(StageStatus.FAILED, reason, error_type="executor_error")
                await self._finish_stage(stage, outcome)
                return
        live = deps.logs.open_live(self.run.id, stage.name)
        log_output: StageOutput = LogOutput(live)
        masker = deps.secrets.masker(self.secret_names)
        if masker:
            log_output = MaskedOutput(log_output, masker)
        env = self._stage_env(stage.name, spec, secrets, container=container is not None)
        outcome = StageOutcome(StageStatus.FAILED, "never ran")
        attempts = spec.retries.max + 1
        for attempt in range(1, attempts + 1):
            record_running: Update | None = None
            # A stage already running here was stored so with its need's end
            # (see _starting_after); any other records its start now.
            if attempt > 1 or stage.status is not StageStatus.RUNNING:
                columns: dict[str, Any] = {"attempt": attempt, "exit_code": None}
                if attempt == 1:
                    columns["started_at"] = time.time()
                stage.exit_code = None
                record_running = self._stage_change(stage, StageStatus.RUNNING, **columns)
            if attempt == 1:
                env = {**env, **deps.tracing.start_stage(self.run, stage)}
            reports_dir = self.reports_root / stage.name / f"attempt-{attempt}"
            if user is not None:
                executor = _AsStageUser(executor, user, self.reports_root, reports_dir)
            ctx = StageContext(
                run=self.views.view(),
                name=stage.name,
                spec=spec,
                attempt=attempt,
                workspace=self.workspace,
                env=env,
                executor=executor,
                log=log_output,
                kill_grace=deps.config.kill_grace,
                reports_dir=reports_dir,
                version=self.run.version,
                artifacts=self.artifacts.snapshot(),
                artifact_store=deps.config.artifacts_dir,
                tag_lookup=self.artifacts.tag_digest,
                credential_lookup=deps.config.registry_credential,
                container=container,
            )
            if deps.delivery is not None:
                ctx.deployments = deps.delivery.for_stage(
                    self.run.id, ctx.log_line, env, self.run.submitted_by
                )
            work = functools.partial(self._attempt, kind, ctx, spec.timeout)
            # The attempt starts while its `running` record commits (both
            # wait on worker threads), unless that record was stored with its
            # needs' last final one; what it ends with is recorded after.
            async with trio.open_nursery() as recording:
                if record_running is not None:
                    recording.start_soon(self._write, record_running)
                outcome = await self.artifacts.attempt(stage, spec, kind, ctx, work)
            if outcome.status is StageStatus.SUCCEEDED or attempt == attempts:
                break
            delay = spec.retries.delay(attempt)
            message = (
                f"attempt {attempt}/{attempts} {outcome.reason}; retrying in {_fmt_seconds(delay)}"
            )
            await self._quietly(stage.name, ctx.log_line(message))
            deps.tracing.stage_event(
                self.run.id,
                stage.name,
                "retry",
                {"attempt": attempt, "reason": outcome.reason, "delay_s": delay},
            )
            event = await deps.journal.record(
                self.run.id,
                EventDraft(
                    EventKind.STAGE_RETRY,
                    stage=stage.name,
                    stage_status=StageStatus.RUNNING,
                    attempt=attempt,
                    exit_code=outcome.exit_code,
                    message=message,
                ),
            )
            self.run.last_event_seq = event.seq
            await trio.sleep(delay)
        await self._finish_stage(stage, outcome)

    async def _attempt(
        self, kind: StageKind, ctx: StageContext, timeout: float | None
    ) -> StageOutcome:
        outcome: StageOutcome
        late = False
        with trio.move_on_after(timeout if timeout else math.inf) as scope:
            try:
                outcome = await kind.run(ctx)
                # A loop held up elsewhere may see the stage's process end
                # only after the deadline, and then nothing cancels the
                # attempt: an attempt that returns past its deadline timed out.
                late = trio.current_time() >= scope.deadline
            except ExecutorError as exc:
                await self._quietly(ctx.name, ctx.log_line(str(exc)))
                outcome = StageOutcome(
                    StageStatus.FAILED, str(exc), error_type="executor_error", system_error=True
                )
            except ProcessKilled as exc:
                await self._quietly(ctx.name, ctx.log_line(f"stage failed: {exc.reason}"))
                outcome = StageOutcome(
                    StageStatus.FAILED,
                    exc.reason,
                    exc.exit_code,
                    error_type=exc.error_type,
                    system_error=exc.system_error,
                )
            except Exception as exc:
                if out_of_space(exc):
                    outcome = await self._no_space(ctx, exc)
                else:
                    owner = self.deps.plugins.owner_of(kind.name)
                    summary = (
                        f"stage kind {kind.name!r} (plugin {owner}) raised"
                        f" {type(exc).__name__}: {exc}"
                    )
                    log.warning("run %s stage %s: %s", self.run.id, ctx.name, summary)
                    trace = REDACTOR.masker.mask("".join(traceback.format_exception(exc)).encode())
                    await self._quietly(ctx.name, ctx.log.write(trace))
                    await self._quietly(ctx.name, ctx.log_line(summary))
                    outcome = StageOutcome(
                        StageStatus.FAILED,
                        summary,
                        error_type=type(exc).__qualname__,
                        system_error=True,
                    )
        if scope.cancelled_caught or late:
            reason = f"timed out after {_fmt_seconds(timeout or 0)}"
            await self._quietly(ctx.name, ctx.log_line(f"stage {reason}"))
            outcome = StageOutcome(StageStatus.TIMED_OUT, reason, error_type="timeout")
        return _redacted(outcome)

    async def _container(self, name: str) -> tuple[ContainerSpec, StageUser | None]:
        """The container stage ``name`` runs in, and the user its processes
        run as on this machine's terms (for ``request.user``), if any.

        The container's user is the stage's ``user:``, else the daemon's
        stage user, else the daemon's own user, or ``nobody`` (65534) when
        the daemon is root. When the daemon is root without a stage user,
        the workspace is handed over to a non-root container user (as to a
        stage user) so it can write there. Raises :class:`ExecutorError`
        when ``user:`` is not the stage user the daemon confines stages to.
        """
        settings = self.spec.container_settings(name)
        if settings.image is None:  # the pipeline check requires one
            raise ExecutorError(f"stage {name!r} runs in a container but names no image")
        confined = self.deps.stage_user
        euid = os.geteuid()
        if settings.user is not None:
            uid_text, _, gid_text = settings.user.partition(":")
            ids = (int(uid_text), int(gid_text or uid_text))
        elif confined is not None:
            ids = (confined.uid, confined.gid)
        elif euid != 0:
            ids = (euid, os.getegid())
        else:
            ids = (NOBODY, NOBODY)
        user = confined
        if confined is not None and ids != (confined.uid, confined.gid):
            raise ExecutorError(
                f"user {settings.user}: this daemon runs every stage as its stage user"
                f" {confined.name} ({confined.uid}:{confined.gid}); leave user: out"
            )
        if confined is None and euid == 0 and ids[0] != 0:
            user = StageUser(name=str(ids[0]), uid=ids[0], gid=ids[1])
            async with self.handing_over:
                if self.workspace_user != ids:
                    try:
                        await trio.to_thread.run_sync(
                            stage_user.hand_over_workspace, self.workspace, user
                        )
                    except OSError as exc:
                        raise ExecutorError(
                            f"cannot hand the workspace over to the container's user"
                            f" {ids[0]}:{ids[1]}: {exc}"
                        ) from exc
                    self.workspace_user = ids
        container = ContainerSpec(
            image=settings.image,
            workspace=self.workspace,
            user=f"{ids[0]}:{ids[1]}",
            network=settings.network,
            cpus=settings.cpus,
            memory=settings.memory,
            placement=settings.placement,
            daemon=self.deps.daemon_id,
            labels={
                LABEL_RUN: self.run.id,
                LABEL_STAGE: name,
                LABEL_DAEMON: self.deps.daemon_id,
            },
        )
        return container, user

    async def _no_space(self, ctx: StageContext, exc: Exception) -> StageOutcome:
        """The outcome of an attempt whose output (or a file it needed) found
        the disk full: the stage failed, with that reason."""
        reason = _no_space_reason(exc)
        log.warning("run %s stage %s: %s", self.run.id, ctx.name, reason)
        await self._quietly(ctx.name, ctx.log_line(f"stage failed: {reason}"))
        return StageOutcome(StageStatus.FAILED, reason, error_type="no_space", system_error=True)


class _CheckoutFailed(Exception):
    pass


def _remove_folders(folders: list[Path]) -> None:
    """Remove each folder and what it holds, if it exists (blocking)."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


class _AsStageUser:
    """Runs a stage's processes as the stage user, through the stage's
    executor; before each one, hands it the attempt's reports folder
    (which the stage kind may have made, or added to, as the daemon)."""

    def __init__(
        self, inner: Executor, user: StageUser, reports_root: Path, reports_dir: Path
    ) -> None:
        self.inner: Executor = inner.inner if isinstance(inner, _AsStageUser) else inner
        self.name = self.inner.name
        self._user = user
        self._reports = (reports_root, reports_dir)

    async def run(self, request: ProcessRequest, output: StageOutput) -> int:
        await trio.to_thread.run_sync(stage_user.prepare_reports_dir, *self._reports, self._user)
        return await self.inner.run(dataclasses.replace(request, user=self._user), output)


def _missing_secrets(names: list[str]) -> StageOutcome:
    """The outcome of a stage whose secrets went away after the run was
    submitted (``conveyord secrets rm``, a restart without them)."""
    listed = ", ".join(names)
    return StageOutcome(
        StageStatus.FAILED,
        f"the daemon no longer holds the secret(s) it asks for: {listed} (conveyord secrets list)",
        error_type="missing_secret",
        system_error=True,
    )


def _redacted(outcome: StageOutcome) -> StageOutcome:
    """``outcome`` with every secret value the daemon knows masked out of
    its reason, report and span attributes (what a stage kind wrote there
    is stored, served and exported)."""
    masker = REDACTOR.masker
    if not masker:
        return outcome
    attributes = {
        key: masker.mask_text(value) if isinstance(value, str) else value
        for key, value in outcome.span_attributes.items()
    }
    return dataclasses.replace(
        outcome,
        reason=masker.mask_text(outcome.reason),
        report=redact_report(outcome.report) if outcome.report is not None else None,
        span_attributes=attributes,
    )


def _no_space_reason(exc: BaseException) -> str:
    """The reason of a stage that found the disk full: the system's words
    (``no space left on device``, ``disk quota exceeded``)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = next((e for e in exc.exceptions if out_of_space(e)), exc.exceptions[0])
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return os.strerror(errno.ENOSPC).lower()


def base_environment(passthrough: list[str], *, inherit_venv: bool = False) -> dict[str, str]:
    """The daemon's environment variables that stages get: those named in
    ``passthrough`` that are set, without the daemon's own virtual
    environment (:func:`without_venv`) unless ``inherit_venv``."""
    env = {name: os.environ[name] for name in passthrough if name in os.environ}
    venv = daemon_venv()
    return env if inherit_venv or venv is None else without_venv(env, venv)


def daemon_venv() -> str | None:
    """The virtual environment the daemon runs in (``sys.prefix``), or None
    when it runs in a base installation."""
    return sys.prefix if sys.prefix != sys.base_prefix else None


def without_venv(env: Mapping[str, str], venv: str) -> dict[str, str]:
    """``env`` without what would make a stage use the virtual environment
    ``venv``: its folders on ``PATH`` (its ``bin``), ``VIRTUAL_ENV`` (with
    ``VIRTUAL_ENV_PROMPT``) and ``PYTHONHOME`` when they point into it, and
    ``PYTHONPATH`` entries inside it. Paths are compared as written and
    with symbolic links resolved."""
    roots = {os.path.normpath(venv), os.path.realpath(venv)}

    def inside(path: str) -> bool:
        if not path:
            return False
        candidates = {os.path.normpath(path), os.path.realpath(path)}
        return any(c == r or c.startswith(r + os.sep) for c in candidates for r in roots)

    def kept_entries(value: str) -> str:
        return os.pathsep.join(p for p in value.split(os.pathsep) if not inside(p))

    result = dict(env)
    if "PATH" in result:
        result["PATH"] = kept_entries(result["PATH"])
    if result.get("PYTHONPATH"):
        result["PYTHONPATH"] = kept_entries(result["PYTHONPATH"])
        if not result["PYTHONPATH"]:
            del result["PYTHONPATH"]
    if inside(result.get("VIRTUAL_ENV", "")):
        del result["VIRTUAL_ENV"]
        result.pop("VIRTUAL_ENV_PROMPT", None)
    if inside(result.get("PYTHONHOME", "")):
        del result["PYTHONHOME"]
    return result
