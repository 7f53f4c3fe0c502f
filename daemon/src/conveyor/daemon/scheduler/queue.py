"""The run queue: a global concurrency limit, per-group serialisation with
optional cancel-in-progress, cancellation and draining on shutdown."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from conveyor.daemon.errors import FailedPrecondition
from conveyor.daemon.pipeline import PipelineSpec
from conveyor.daemon.records import EventKind, RunRecord, RunStatus, StageStatus
from conveyor.daemon.scheduler.control import RunControl, already_finished
from conveyor.daemon.scheduler.runner import RunDeps, RunExecution
from conveyor.daemon.store.database import out_of_space
from conveyor.daemon.store.runs import EventDraft

log = logging.getLogger(__name__)


@dataclass
class _Group:
    lock: trio.Lock = field(default_factory=trio.Lock)
    members: list[RunControl] = field(default_factory=list)


def _nothing() -> None:
    pass


def concurrency_group(spec: PipelineSpec, ref: str) -> tuple[str, bool]:
    """The run's group key ("" for none) and whether it cancels older runs."""
    if spec.concurrency is None:
        return "", False
    template = spec.concurrency.group or "{pipeline}/{ref}"
    # `main` and `refs/heads/main` (what a push hook sends) are one branch
    short_ref = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    key = template.replace("{pipeline}", spec.name).replace("{ref}", short_ref)
    return key, spec.concurrency.cancel_in_progress


class Scheduler:
    """Starts queued runs as slots free up.

    Use :meth:`serve` as a task (``await nursery.start(scheduler.serve)``);
    :meth:`enqueue` after it has started.
    """

    def __init__(self, deps: RunDeps) -> None:
        self.deps = deps
        self._limiter = trio.CapacityLimiter(deps.config.max_concurrent_runs)
        self._groups: dict[str, _Group] = {}
        self._controls: dict[str, RunControl] = {}
        self._nursery: trio.Nursery | None = None
        self._accepting = False
        self._idle = trio.Event()
        self._idle.set()
        #: Called (on the loop) each time the last run in the queue ends.
        self.on_idle: Callable[[], None] = _nothing

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def active_runs(self) -> int:
        return self._limiter.borrowed_tokens

    @property
    def active_stages(self) -> int:
        return self.deps.stats.active_stages

    @property
    def idle(self) -> bool:
        """No run is queued or active."""
        return not self._controls

    @property
    def queued_runs(self) -> int:
        return len(self._controls) - self._limiter.borrowed_tokens

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._accepting = True
            task_status.started()
            await trio.sleep_forever()

    def enqueue(
        self, run: RunRecord, spec: PipelineSpec, *, tags: tuple[str, ...] | None = None
    ) -> None:
        """Queue a stored run. Cancels older runs of its group if it asks to.
        ``tags``: the release tags on its commit, read when it was submitted
        (None: read when it starts).

        While draining, the run is left as it is stored (queued): the next
        start-up runs it.
        """
        if not self._accepting or self._nursery is None:
            log.info("run %s stays queued until the next start-up", run.id)
            return
        key, cancel_older = concurrency_group(spec, run.ref)
        control = RunControl(run_id=run.id, group=key)
        if key:
            group = self._groups.setdefault(key, _Group())
            if cancel_older:
                for older in group.members:
                    older.cancel(f"superseded by run #{run.number} ({run.id}) in group {key!r}")
            group.members.append(control)
        self._controls[run.id] = control
        self._idle = trio.Event()
        self._nursery.start_soon(self._lifecycle, control, run, spec, tags, name=f"run {run.id}")

    async def _lifecycle(
        self,
        control: RunControl,
        run: RunRecord,
        spec: PipelineSpec,
        tags: tuple[str, ...] | None = None,
    ) -> None:
        group = self._groups.get(control.group) if control.group else None
        try:
            with control.cancel_scope:
                async with group.lock if group else contextlib.nullcontext(), self._limiter:
                    if not self._accepting:
                        return  # draining: stays queued for the next start-up
                    control.started = True
                    await RunExecution(self.deps, run, spec, control, tags=tags).execute()
            if not control.started and control.cancel_status is RunStatus.CANCELLED:
                _, reason = control.decide(RunStatus.CANCELLED, control.cancel_reason)
                with trio.CancelScope(shield=True):
                    await self._cancel_queued(run, reason)
        except Exception as exc:
            if out_of_space(exc):
                # Only once held writes were given up on (shutdown): the
                # store still says running, and the next start-up records
                # the run as interrupted.
                log.error("run %s: its state could not be stored: %s", run.id, exc)
            else:
                log.exception("run %s: unexpected error in the scheduler", run.id)
                with trio.CancelScope(shield=True):
                    try:
                        await self._record_internal_error(run, exc)
                    except Exception:
                        log.exception("run %s: the error could not be recorded", run.id)
        finally:
            self._controls.pop(run.id, None)
            if group is not None:
                group.members.remove(control)
                if not group.members:
                    self._groups.pop(control.group, None)
            control.finished.set()
            if self.idle:
                self._idle.set()
                self.on_idle()

    async def _cancel_queued(self, run: RunRecord, reason: str) -> None:
        journal = self.deps.journal
        now = time.time()
        for stage in run.stages:
            await journal.record(
                run.id,
                EventDraft(
                    EventKind.STAGE_STATUS,
                    stage=stage.name,
                    stage_status=StageStatus.CANCELLED,
                    message=f"not started: {reason}",
                ),
                stage={
                    "status": StageStatus.CANCELLED,
                    "reason": f"not started: {reason}",
                    "finished_at": now,
                },
            )
            self.deps.logs.release(run.id, stage.name)
        await journal.record(
            run.id,
            EventDraft(EventKind.RUN_STATUS, run_status=RunStatus.CANCELLED, message=reason),
            run={"status": RunStatus.CANCELLED, "reason": reason, "finished_at": now},
        )
        run.status, run.reason, run.finished_at = RunStatus.CANCELLED, reason, now
        for stage in run.stages:
            stage.status, stage.reason, stage.finished_at = (
                StageStatus.CANCELLED,
                f"not started: {reason}",
                now,
            )
            self.deps.tracing.end_stage(run, stage)
        self.deps.tracing.end_run(run)
        self.deps.plugins.run_finished(run)

    async def _record_internal_error(self, run: RunRecord, exc: Exception) -> None:
        """Never leave a run looking queued or running after a bug: fail it."""
        stored = await self.deps.journal.store.get_run(run.id)
        if stored is None or stored.status.finished:
            return
        reason = f"internal error: {type(exc).__name__}: {exc}"
        await self.deps.journal.record(
            run.id,
            EventDraft(EventKind.RUN_STATUS, run_status=RunStatus.FAILED, message=reason),
            run={"status": RunStatus.FAILED, "reason": reason, "finished_at": time.time()},
        )
        for stage in stored.stages:
            self.deps.logs.release(run.id, stage.name)

    async def cancel(self, run_id: str, reason: str, *, wait: float) -> None:
        """Cancel a queued or running run; wait up to ``wait`` s for it to stop.

        Once this returns, the run ends ``cancelled`` (it may still be
        stopping when ``wait`` passed). Raises FailedPrecondition, naming the
        final status, when the run's final status was decided before the
        cancel got in, or when the run is not queued or running here.
        """
        control = self._controls.get(run_id)
        if control is None:
            raise FailedPrecondition(f"run {run_id} is not queued or running in this daemon")
        if not control.cancel(reason or "cancelled by request"):
            assert control.final_status is not None
            raise already_finished(run_id, control.final_status)
        with trio.move_on_after(wait):
            await control.finished.wait()

    async def drain(self, mode: str, timeout: float) -> None:
        """Stop accepting runs; let running ones finish (``mode="finish"``, up
        to ``timeout`` s), then stop the rest as interrupted. Runs that never
        started stay queued in the store and run after the next start-up."""
        self._accepting = False
        if mode == "finish":
            with trio.move_on_after(timeout):
                await self._wait_for_running()
        for control in list(self._controls.values()):
            control.cancel(
                "the daemon shut down while the run was in progress", RunStatus.INTERRUPTED
            )
        await self._idle.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _wait_for_running(self) -> None:
        # No run starts while draining, so waiting for these is enough.
        for control in [c for c in self._controls.values() if c.started]:
            await control.finished.wait()
