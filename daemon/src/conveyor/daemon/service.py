"""The daemon's operations, on the trio side of the API.

Each method validates its input and raises a domain error
(:mod:`conveyor.daemon.errors`) that the gRPC layer turns into a status code.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shutil
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from conveyor.daemon import vcs
from conveyor.daemon.artifacts.catalog import ArtifactCatalog
from conveyor.daemon.auth.identity import ANONYMOUS, Principal
from conveyor.daemon.auth.permissions import Permission
from conveyor.daemon.auth.repositories import allowed_repository, check_unchanged
from conveyor.daemon.config import Config
from conveyor.daemon.delivery.service import DeliveryService
from conveyor.daemon.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from conveyor.daemon.events import EventBus
from conveyor.daemon.executors.base import container_fields
from conveyor.daemon.logstore import LogStore
from conveyor.daemon.pipeline import (
    Diagnostic,
    Limits,
    PipelineError,
    PipelineSpec,
    PipelineTooLarge,
    TargetCheck,
    check_pipeline,
    load_pipeline,
)
from conveyor.daemon.plugins import PluginInfo, Plugins
from conveyor.daemon.records import (
    EventKind,
    EventRecord,
    RunRecord,
    RunStatus,
    StageRecord,
    TriggerKind,
)
from conveyor.daemon.scheduler import Scheduler
from conveyor.daemon.scheduler.control import already_finished
from conveyor.daemon.scheduler.queue import concurrency_group
from conveyor.daemon.secrets.providers import Secrets
from conveyor.daemon.store import RunFilter, RunStore
from conveyor.daemon.store.database import out_of_space
from conveyor.daemon.telemetry import Telemetry
from conveyor.daemon.telemetry.tracing import remote_context

_RUN_ID_RE = re.compile(r"^[0-9a-f]{12,40}$")
_HEX_RE = re.compile(r"^[0-9a-f]{4,40}$")
DEFAULT_PIPELINE_PATH = "conveyor.yaml"
EVENT_BATCH = 500
SPEC_CACHE_SIZE = 256
#: Pipeline files parsed and checked at once, each in a worker thread.
VALIDATION_THREADS = 2
FINISHED = frozenset(status for status in RunStatus if status.finished)
MAX_PAGE_SIZE = 500
MIB = 1 << 20
#: Seconds a client refused for lack of space is told to wait.
SPACE_RETRY_AFTER = 30.0
#: A reading of the free space far above the floor (by ROOMY_MARGIN bytes)
#: is trusted this long, so a burst of submits does not ask for each.
ROOMY_SECONDS = 1.0
ROOMY_MARGIN = 1 << 30

log = logging.getLogger(__name__)


def free_space(path: Path) -> int:
    """Bytes free for the daemon on the file system of ``path`` (blocking)."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _folder_names(root: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    except FileNotFoundError:
        return []


def new_run_id() -> str:
    """Time-ordered, so sorting ids sorts runs by submission."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


@dataclass(frozen=True)
class SubmitRequest:
    repository: str
    ref: str
    pipeline_path: str = ""
    trigger: TriggerKind = TriggerKind.MANUAL
    idempotency_key: str = ""
    commit: str = ""
    #: W3C trace context (``traceparent``, ``tracestate``) sent with the call.
    trace_carrier: Mapping[str, str] = field(default_factory=dict)
    #: Who submits: recorded as the run's ``submitted_by``; which
    #: repositories it may build is checked.
    caller: Principal = ANONYMOUS


@dataclass(frozen=True)
class Validation:
    spec: PipelineSpec | None
    diagnostics: list[Diagnostic]


@dataclass(frozen=True)
class LoadedPipeline:
    """A valid pipeline file with what every run of it needs, computed once
    in the worker thread that checked it."""

    spec: PipelineSpec
    #: Stage names in execution order.
    order: list[str]
    #: The spec as stored with each run.
    spec_json: str


class RunService:
    def __init__(
        self,
        *,
        config: Config,
        store: RunStore,
        bus: EventBus,
        logs: LogStore,
        plugins: Plugins,
        scheduler: Scheduler,
        telemetry: Telemetry,
        artifacts: ArtifactCatalog | None = None,
        secrets: Secrets | None = None,
        delivery: DeliveryService | None = None,
        git_readers: vcs.CatFiles | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        self.logs = logs
        self.plugins = plugins
        self.scheduler = scheduler
        self.telemetry = telemetry
        self._artifacts = artifacts
        self.secrets = secrets if secrets is not None else Secrets()
        self._delivery = delivery
        self.started_at = time.time()
        self._specs: OrderedDict[tuple[str, str, int], LoadedPipeline] = OrderedDict()
        self._validation_limiter = trio.CapacityLimiter(VALIDATION_THREADS)
        #: Why SubmitRun refuses new runs whatever the free space ("" when it
        #: does not): set while start-up waits for space to record recovery.
        self.refusing_runs = ""
        #: The last reading of the free space: (monotonic time, bytes).
        self._roomy: tuple[float, int] = (-math.inf, 0)
        #: git processes kept to read what is submitted (see vcs.CatFiles),
        #: shared with the checkouts when given.
        self._git = git_readers if git_readers is not None else vcs.CatFiles()

    # -- pipelines -------------------------------------------------------------

    def _installed(self) -> dict[str, Any]:
        """What a pipeline file is checked against: the installed stage kinds
        (with their parameter validators), executors, the size limits and
        the secrets the daemon holds."""
        return {
            "stage_kinds": {n: k.validate for n, k in self.plugins.stage_kinds.items()},
            "executors": self.plugins.executors.keys(),
            "container_executors": {
                name: fields
                for name, executor in self.plugins.executors.items()
                if (fields := container_fields(executor))
            },
            "deploy_targets": {
                name: TargetCheck(target.validate, bool(getattr(target, "requires_command", False)))
                for name, target in self.plugins.deploy_targets.items()
            },
            "environments": self.config.environments.keys(),
            "limits": Limits(
                max_stages=self.config.max_stages,
                max_needs=self.config.max_needs,
                max_diagnostics=self.config.max_diagnostics,
            ),
            "secrets": self.secrets.catalog(),
        }

    async def validate(self, text: str, file: str) -> Validation:
        """Check a pipeline file (in a worker thread: it costs time linear in
        its size). A file over a size limit raises :class:`InvalidArgument`
        naming the limit."""
        installed = self._installed()

        def check() -> Validation:
            try:
                spec, diagnostics = check_pipeline(text, file or DEFAULT_PIPELINE_PATH, **installed)
            except PipelineTooLarge as exc:
                raise InvalidArgument(str(exc)) from None
            return Validation(spec, diagnostics)

        return await trio.to_thread.run_sync(check, limiter=self._validation_limiter)

    async def _load_cached(self, revision: vcs.Revision, file: str) -> LoadedPipeline:
        """Parse a pipeline file, reusing the result for a blob seen before
        (stage kinds and executors do not change while the daemon runs; a
        change of the secrets checks it again)."""
        key = (revision.pipeline_blob, file, self.secrets.generation)
        loaded = self._specs.get(key)
        if loaded is None:
            loaded = await trio.to_thread.run_sync(
                self._load,
                revision.pipeline_text,
                file,
                self._installed(),
                limiter=self._validation_limiter,
            )
            self._specs[key] = loaded
            if len(self._specs) > SPEC_CACHE_SIZE:
                self._specs.popitem(last=False)
        else:
            self._specs.move_to_end(key)
        return loaded

    def _load(self, text: str, file: str, installed: dict[str, Any]) -> LoadedPipeline:
        """Blocking: run it in a worker thread."""
        try:
            spec = load_pipeline(text, file, **installed)
        except PipelineError as exc:
            message = f"invalid pipeline file:\n{exc}"
            broken = [p for p in self.plugins.describe() if p.error]
            if broken and any("stage kind" in d.message for d in exc.diagnostics):
                message += "\nnote: these plugins failed to load and provide nothing: " + "; ".join(
                    f"{p.name} ({p.error})" for p in broken
                )
            raise InvalidArgument(message) from None
        return LoadedPipeline(spec, spec.stage_order(), spec.model_dump_json(by_alias=True))

    # -- runs ------------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> tuple[RunRecord, bool]:
        """Store a run as queued and hand it to the scheduler; returns it and
        True, or the earlier run and False for an idempotency key used
        before in the repository.

        During a shutdown the run is stored all the same and stays queued
        until the next start-up. Raises InvalidArgument / NotFound /
        FailedPrecondition for a bad request, repository or pipeline, and
        ResourceExhausted when the disk has too little space (see
        :meth:`_check_room`) or the run could not be stored for lack of it;
        PermissionDenied when the caller may not build the repository.
        """
        if not request.repository:
            raise InvalidArgument("repository is required", field="repository")
        if not request.ref and not request.commit:
            raise InvalidArgument("ref is required (a branch, tag or commit)", field="ref")
        if request.commit and not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", request.commit):
            raise InvalidArgument(
                f"commit {request.commit!r} is not a full hex commit id", field="commit"
            )
        pipeline_path = request.pipeline_path or DEFAULT_PIPELINE_PATH
        if pipeline_path.startswith("/") or ".." in Path(pipeline_path).parts:
            raise InvalidArgument(
                f"pipeline_path {pipeline_path!r} must be relative to the repository root",
                field="pipeline_path",
            )
        caller = request.caller
        repo = vcs.repository_path(request.repository)
        if not caller.any_repository:
            repo = await trio.to_thread.run_sync(allowed_repository, caller, repo)
        if request.idempotency_key:
            # keys are scoped by caller and repository: a fork pushing the
            # same commit with the same hook key gets its own run
            existing = await self.store.run_for_idempotency_key(
                str(repo), request.idempotency_key, caller.identity
            )
            if existing is not None:
                return existing, False
        await self._check_room()
        revision = await vcs.resolve(
            repo, request.ref, pipeline_path, commit=request.commit, readers=self._git
        )
        if not caller.any_repository:
            await trio.to_thread.run_sync(check_unchanged, caller, repo)
        loaded = await self._load_cached(revision, pipeline_path)
        spec = loaded.spec
        check_deploy_rights(caller, spec)
        ref = request.ref or revision.commit
        group, _ = concurrency_group(spec, ref)
        run_id = new_run_id()
        run = RunRecord(
            id=run_id,
            number=0,
            pipeline=spec.name,
            repository=str(repo),
            ref=ref,
            ref_type=revision.ref_type,
            commit=revision.commit,
            pipeline_path=pipeline_path,
            trigger=request.trigger,
            status=RunStatus.QUEUED,
            created_at=time.time(),
            spec_json=loaded.spec_json,
            concurrency_group=group,
            submitted_by=caller.identity,
            stages=[
                StageRecord(
                    run_id=run_id,
                    name=name,
                    position=position,
                    kind=spec.stages[name].uses,
                    needs=list(spec.stages[name].needs),
                )
                for position, name in enumerate(loaded.order)
            ],
        )
        # The span starts first, so its ids are stored with the run; the run
        # counts as pending only once it is stored.
        tracing = self.telemetry.runs
        run.trace_id, run.span_id = tracing.start_run(run, request.trace_carrier)
        try:
            stored, created = await self.store.create_run(run, request.idempotency_key)
        except BaseException as exc:
            tracing.drop_run(run.id, error=exc)
            if isinstance(exc, Exception) and out_of_space(exc):
                raise ResourceExhausted(
                    f"no space left on device: the run could not be stored ({exc});"
                    " free some space in the daemon's home, then submit again",
                    retry_after=SPACE_RETRY_AFTER,
                ) from None
            raise
        if not created:  # lost a race with the same key
            tracing.drop_run(run.id, duplicate_of=stored.id)
            return stored, False
        tracing.run_stored(stored)
        self.bus.publish(stored.id)
        # While the daemon shuts down the run stays queued, stored, and
        # starts after the next start-up (see Scheduler.enqueue).
        self.scheduler.enqueue(stored, spec, tags=revision.release_tags)
        return stored, True

    async def _check_room(self) -> None:
        """Refuse new runs (RESOURCE_EXHAUSTED) while the daemon cannot take
        them: free space in the home below ``min_free_space``, or a
        start-up that waits for space to record its recovery."""
        floor = self.config.min_free_space
        if floor:
            free = await self._free_space(floor * MIB)
            if free < floor * MIB:
                raise ResourceExhausted(
                    f"not enough free space for new runs: {free / MIB:.1f} MiB free on the file"
                    f" system of {self.config.home}, below min_free_space ({floor} MiB); free"
                    " some space (old logs/<run id>/ folders), then submit again",
                    retry_after=SPACE_RETRY_AFTER,
                )
        if self.refusing_runs:
            raise ResourceExhausted(self.refusing_runs, retry_after=SPACE_RETRY_AFTER)

    async def _free_space(self, floor: int) -> int:
        """Bytes free in the home: a reading of less than
        :data:`ROOMY_SECONDS` ago when it was far above ``floor`` (by
        :data:`ROOMY_MARGIN`: no disk fills that fast), else a new one (in a
        worker thread)."""
        now = time.monotonic()
        read_at, free = self._roomy
        if now - read_at < ROOMY_SECONDS and free >= floor + ROOMY_MARGIN:
            return free
        free = await trio.to_thread.run_sync(free_space, self.config.home)
        self._roomy = (time.monotonic(), free)
        return free

    async def aclose(self) -> None:
        """Let go of what the service keeps between calls (git processes)."""
        await self._git.aclose()

    async def remove_stale_workspaces(self) -> int:
        """Remove every workspace (and ``.reports`` and ``.home`` folder) under
        ``workspaces/`` whose run is finished or unknown, unless
        ``keep_workspaces`` is set; returns how many folders went.

        Called at start-up before any run starts, so it also finishes what
        an earlier start-up (killed half-way through its recovery) or a run
        killed while closing out left behind. Folders not named after a run
        are left alone.
        """
        if self.config.keep_workspaces:
            return 0
        root = self.config.workspaces_dir
        names = await trio.to_thread.run_sync(_folder_names, root)
        removed = 0
        for name in names:
            run_id = name.removesuffix(".reports").removesuffix(".home")
            if not _RUN_ID_RE.match(run_id):
                continue
            run = await self.store.get_run(run_id)
            if run is None or run.status.finished:
                await trio.to_thread.run_sync(shutil.rmtree, root / name, True)
                removed += 1
        return removed

    async def close_interrupted(self, run_ids: list[str]) -> None:
        """Tell plugins that the runs start-up recovery marked interrupted
        finished (their workspaces go with :meth:`remove_stale_workspaces`)."""
        for run_id in run_ids:
            run = await self.store.get_run(run_id)
            if run is not None:
                self.plugins.run_finished(run)

    async def resume_queued(self, run_ids: list[str]) -> None:
        """Queue again the runs a previous daemon acknowledged but never started."""
        for run_id in run_ids:
            run = await self.store.get_run(run_id)
            if run is None:
                continue
            spec = PipelineSpec.model_validate_json(run.spec_json)
            previous = remote_context(run.trace_id, run.span_id)
            run.trace_id, run.span_id = self.telemetry.runs.start_run(run, previous=previous)
            try:
                await self.store.set_trace(run.id, run.trace_id, run.span_id)
            except Exception as exc:
                if not out_of_space(exc):
                    raise
                # The new trace ids are only shown by GetRun; the run goes on.
                log.warning("run %s: its new trace could not be stored: %s", run.id, exc)
            self.telemetry.runs.run_stored(run)
            self.scheduler.enqueue(run, spec)

    def _check_run_id(self, run_id: str) -> None:
        if not run_id:
            raise InvalidArgument("run_id is required", field="run_id")
        if not _RUN_ID_RE.match(run_id):
            raise InvalidArgument(
                f"run_id {run_id!r} is malformed (expected hex digits)", field="run_id"
            )

    async def get_run(self, run_id: str) -> RunRecord:
        self._check_run_id(run_id)
        run = await self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        self._fill_live(run)
        return run

    def _fill_live(self, run: RunRecord) -> None:
        for stage in run.stages:
            live = self.logs.live(run.id, stage.name)
            if live is not None and live.size > stage.log_size:
                stage.log_size = live.size

    async def list_runs(
        self, filt: RunFilter, page_size: int, page_token: str
    ) -> tuple[list[RunRecord], str]:
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be between 1 and {MAX_PAGE_SIZE}", field="page_size"
            )
        if page_token and not _RUN_ID_RE.match(page_token):
            raise InvalidArgument("page_token is malformed", field="page_token")
        if filt.commit_prefix and not _HEX_RE.match(filt.commit_prefix):
            raise InvalidArgument("commit must be 4 to 40 lowercase hex digits", field="commit")
        size = page_size or 50
        runs = await self.store.list_runs(filt, limit=size + 1, before_id=page_token)
        next_token = runs[size - 1].id if len(runs) > size else ""
        runs = runs[:size]
        for run in runs:
            self._fill_live(run)
        return runs, next_token

    async def cancel_run(
        self, run_id: str, reason: str, caller: Principal = ANONYMOUS
    ) -> RunRecord:
        """Cancel a queued or running run and return it.

        An OK answer means the run ends ``cancelled``; a run whose final
        status was decided before the cancel got in raises
        FailedPrecondition naming that status (see :meth:`Scheduler.cancel`).
        A caller without the ``runs.cancel_any`` permission may cancel only
        the runs it submitted (PermissionDenied otherwise).
        """
        run = await self.get_run(run_id)
        if not caller.may(Permission.CANCEL_ANY) and run.submitted_by != caller.identity:
            raise PermissionDenied(
                f"{caller.describe()} may cancel only the runs it submitted; run {run_id} was"
                f" submitted by {run.submitted_by or 'an unknown caller'}",
                field="run_id",
            )
        if run.status.finished:
            raise already_finished(run_id, run.status)
        try:
            await self.scheduler.cancel(run_id, reason, wait=self.config.kill_grace + 5)
        except FailedPrecondition:
            stored = await self.store.get_run(run_id)
            if stored is not None and stored.status.finished:
                raise already_finished(run_id, stored.status) from None
            raise
        return await self.get_run(run_id)

    async def watch(self, run_id: str, after_seq: int) -> AsyncIterator[EventRecord]:
        """Events after ``after_seq``, then live ones until the run ends."""
        if after_seq < 0:
            raise InvalidArgument("after_seq must not be negative", field="after_seq")
        await self.get_run(run_id)
        seq = after_seq
        with self.bus.subscribe(run_id) as topic:
            while True:
                changed = topic.event
                events = topic.cached_after(seq)
                if events is None:
                    events = await self.store.events_after(run_id, seq, EVENT_BATCH)
                for event in events:
                    yield event
                    seq = event.seq
                    if event.kind is EventKind.RUN_STATUS and event.run_status in FINISHED:
                        return  # a run's final status is its last event
                if len(events) == EVENT_BATCH:
                    continue
                if not events:
                    progress = await self.store.run_progress(run_id)
                    if progress is None:
                        return
                    status, last_seq = progress
                    if status.finished and seq >= last_seq:
                        return
                await changed.wait()

    async def stream_logs(
        self, run_id: str, stage: str, offset: int, follow: bool
    ) -> AsyncIterator[tuple[int, bytes]]:
        if not stage:
            raise InvalidArgument("stage is required", field="stage")
        if offset < 0:
            raise InvalidArgument("offset must not be negative", field="offset")
        run = await self.get_run(run_id)
        try:
            record = run.stage(stage)
        except KeyError:
            names = ", ".join(s.name for s in run.stages)
            raise NotFound(
                f"run {run_id} has no stage {stage!r} (stages: {names})", field="stage"
            ) from None
        log = await self.logs.reader(run_id, stage, finished=record.status.finished)
        if record.status.finished and offset > log.size:
            raise OutOfRange(
                f"offset {offset} is past the end of the log of stage {stage!r}, which"
                f" finished with {log.size} bytes",
                field="offset",
            )
        async for chunk in log.chunks(offset, follow=follow):
            yield chunk

    @property
    def artifacts(self) -> ArtifactCatalog:
        """Artifact queries; Unavailable when the daemon was made without them."""
        if self._artifacts is None:
            raise Unavailable("this daemon keeps no artifacts")
        return self._artifacts

    @property
    def delivery(self) -> DeliveryService:
        """Deployments; Unavailable when the daemon was made without them."""
        if self._delivery is None:
            raise Unavailable("this daemon does not deploy")
        return self._delivery

    def list_plugins(self) -> list[PluginInfo]:
        return self.plugins.describe()


#: The built-in stage kind that deploys, and the permissions its parameters need.
DEPLOY_KIND = "deploy"


def check_deploy_rights(caller: Principal, spec: PipelineSpec) -> None:
    """A run deploys on behalf of whoever submitted it: refuse a pipeline
    whose ``deploy`` stages go where the caller may not deploy (or promote),
    so a developer cannot reach production by writing a pipeline.

    Raises PermissionDenied naming the stage and the role it needs.
    """
    for name, stage in spec.stages.items():
        if stage.uses != DEPLOY_KIND:
            continue
        environment = stage.with_.get("environment")
        if not isinstance(environment, str):
            continue  # the kind's own validation reported it
        promote = bool(stage.with_.get("promote_from"))
        permission = Permission.PROMOTE if promote else Permission.DEPLOY
        if not caller.may(permission, environment):
            raise PermissionDenied(
                f"stage {name!r} {'promotes' if promote else 'deploys'} to {environment},"
                f" which {caller.describe()} may not (needs the deployer:{environment} role)"
            )
