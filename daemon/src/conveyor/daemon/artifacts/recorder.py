"""The artifact side of a run: its version, the workspace check around
stages that build, the build-once cache, and the recording of what stages
produce.

The runner makes one :class:`RunArtifacts` per run and runs every stage
attempt through :meth:`RunArtifacts.attempt`:

1. A stage with ``inputs:`` gets a cache key (the git object ids of its
   inputs and of its kind's ``cache_inputs``, the stage as written, the
   kind). When an earlier run of the same pipeline and stage recorded
   artifacts under that key, and the kind (if it can tell) says they still
   exist, the stage succeeds at once with them: a cache hit.
2. A stage whose kind produces artifacts, or that says ``require_clean``,
   has the workspace's tracked files compared with the commit before and
   after its work: a difference fails it (``workspace_changed``), or, with
   ``allow_dirty``, is recorded with its artifacts.
3. What a succeeded attempt returns in ``StageOutcome.artifacts`` is
   recorded with signed provenance, its tags checked, announced to plugins
   and put on the stage's span.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from conveyor.daemon import vcs
from conveyor.daemon.artifacts import versioning
from conveyor.daemon.artifacts.cache import NoCacheKey, stage_cache_key
from conveyor.daemon.artifacts.model import Artifact, StageTiming
from conveyor.daemon.artifacts.outputs import (
    InvalidOutput,
    check_output,
    listing,
    plural,
    span_attributes,
)
from conveyor.daemon.artifacts.provenance import BuildFacts, statement
from conveyor.daemon.artifacts.signing import SigningKey
from conveyor.daemon.pipeline import PipelineSpec, StageSpec
from conveyor.daemon.plugins import Plugins
from conveyor.daemon.records import RunRecord, StageRecord, StageStatus
from conveyor.daemon.stages import StageContext, StageKind, StageOutcome
from conveyor.daemon.store.artifacts import ArtifactDraft, ArtifactStore, TagConflict
from conveyor.daemon.telemetry import attributes as a

log = logging.getLogger(__name__)

#: Changed files kept with an artifact and in its provenance; all are counted.
KEPT_FILES: Final = 500


def builder_id(home: Path) -> str:
    """This daemon as a SLSA builder: ``conveyor://<host><home>``."""
    return f"conveyor://{socket.gethostname()}{home}"


def builder_version() -> str:
    try:
        return metadata.version("conveyor-daemon")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ArtifactDeps:
    """What recording artifacts needs from the daemon."""

    store: ArtifactStore
    key: SigningKey
    builder_id: str
    builder_version: str

    def seal(self, facts: BuildFacts) -> tuple[str, str]:
        """Sign the provenance of ``facts``: ``(DSSE envelope, key id)``."""
        return self.key.sign_statement(statement(facts)), self.key.key_id


class _Stop(Exception):
    """Ends an attempt early with ``outcome``."""

    def __init__(self, outcome: StageOutcome) -> None:
        self.outcome = outcome


class RunArtifacts:
    """The artifact side of one run (see the module docstring).

    ``deps`` None leaves out what needs the store (tests of other parts):
    the version is still computed and the workspace still checked, but
    nothing is cached or recorded.
    """

    def __init__(
        self,
        deps: ArtifactDeps | None,
        run: RunRecord,
        spec: PipelineSpec,
        workspace: Path,
        plugins: Plugins,
    ) -> None:
        self.deps = deps
        self.run = run
        self.spec = spec
        self.workspace = workspace
        self.plugins = plugins
        #: What the run recorded or reused so far, oldest first.
        self.recorded: list[Artifact] = []

    # -- the run ----------------------------------------------------------------

    async def version(self, tags: tuple[str, ...] | None = None) -> str:
        """The run's version (see :func:`versioning.version_for_run`), from
        ``tags`` on the commit (its release tags, read when the run was
        submitted) or, without them, from the tags the commit has now.

        Raises :class:`vcs.GitError` when the commit's tags cannot be read.
        """
        run = self.run
        if tags is None:
            tags = tuple(await vcs.commit_tags(Path(run.repository), run.commit))
        version = versioning.version_for_run(
            tags=list(tags), base=self.spec.version, run_number=run.number, commit=run.commit
        )
        return str(version)

    def snapshot(self) -> tuple[Artifact, ...]:
        return tuple(self.recorded)

    async def tag_digest(self, name: str, tag: str) -> str | None:
        if self.deps is None:
            return None
        return await self.deps.store.tag_digest(name, tag)

    def _keep(self, artifacts: Iterable[Artifact]) -> None:
        for artifact in artifacts:
            self.recorded = [r for r in self.recorded if r.digest != artifact.digest]
            self.recorded.append(artifact)

    # -- a stage attempt ----------------------------------------------------------

    async def attempt(
        self,
        stage: StageRecord,
        spec: StageSpec,
        kind: StageKind,
        ctx: StageContext,
        work: Callable[[], Awaitable[StageOutcome]],
    ) -> StageOutcome:
        """Run one attempt's ``work`` with the cache, the workspace check and
        the recording around it; returns the attempt's outcome."""
        try:
            key = await self._cache_key(spec, kind, ctx)
            if key:
                hit = await self._cache_hit(stage, kind, ctx, key)
                if hit is not None:
                    return hit
            checked = getattr(kind, "produces_artifacts", False) is True or spec.require_clean
            dirty: list[str] = []
            if checked:
                dirty = await self._check(ctx, spec, "before")
            outcome = await work()
            if outcome.status is not StageStatus.SUCCEEDED:
                return outcome
            if checked:
                dirty = sorted({*dirty, *await self._check(ctx, spec, "after")})
            if not outcome.artifacts:
                return outcome
            return await self._record(stage, spec, kind, ctx, outcome, dirty, key)
        except _Stop as stop:
            return stop.outcome

    # -- the workspace check --------------------------------------------------------

    async def _check(self, ctx: StageContext, spec: StageSpec, when: str) -> list[str]:
        """The tracked files that differ from the commit; raises :class:`_Stop`
        with a failed outcome when that is not allowed."""
        commit = self.run.commit
        try:
            changed = await vcs.changed_files(self.workspace, commit)
        except (vcs.GitError, OSError) as exc:
            reason = (
                f"cannot compare the workspace with commit {commit[:12]} {when} the stage: {exc}"
            )
            await ctx.log_line(reason)
            raise _Stop(
                StageOutcome(StageStatus.FAILED, reason, error_type="workspace_changed")
            ) from None
        if not changed:
            return []
        files = plural(len(changed), "tracked file")
        cause = (
            "changed by an earlier or parallel stage"
            if when == "before"
            else "changed while the stage ran, by it or a parallel stage"
        )
        verb = "differs" if len(changed) == 1 else "differ"
        what = f"{files} {verb} from commit {commit[:12]} {when} the stage ({cause})"
        if spec.allow_dirty:
            await ctx.log_line(
                f"{what}: {listing(changed)}; allowed by allow_dirty: its artifacts are marked"
                " not reproducible from the commit"
            )
            return changed
        reason = f"{what}: {listing(changed)}"
        await ctx.log_line(
            f"{reason}; a build must package the commit (set allow_dirty: true to record the"
            " difference instead)"
        )
        raise _Stop(StageOutcome(StageStatus.FAILED, reason, error_type="workspace_changed"))

    # -- the build-once cache -------------------------------------------------------

    async def _cache_key(self, spec: StageSpec, kind: StageKind, ctx: StageContext) -> str:
        """The stage's cache key, or "" when it has none (no ``inputs:``, no
        store, or a reason the log then gives)."""
        if not spec.inputs or self.deps is None:
            return ""
        try:
            return await stage_cache_key(spec, kind, self.run, self.spec.env)
        except NoCacheKey as exc:
            await ctx.log_line(f"cache: {exc}; the stage runs without the cache")
            return ""

    async def _cache_hit(
        self, stage: StageRecord, kind: StageKind, ctx: StageContext, cache_key: str
    ) -> StageOutcome | None:
        """The outcome of a cache hit, or None to do the work."""
        assert self.deps is not None
        store = self.deps.store
        cached = await store.cached(self.run.pipeline, stage.name, cache_key)
        if not cached:
            await ctx.log_line(f"cache: no artifact recorded under key {cache_key}")
            return None
        available = getattr(kind, "artifact_available", None)
        if callable(available):
            for artifact in cached:
                try:
                    ok = bool(await available(artifact))
                except Exception as exc:
                    ok = False
                    log.warning(
                        "stage kind %s: artifact_available(%s) raised %r",
                        kind.name,
                        artifact.digest,
                        exc,
                    )
                if not ok:
                    await ctx.log_line(
                        f"cache: {artifact.digest} from run #{artifact.run_number} is no longer"
                        " available; building again"
                    )
                    return None
        restore = getattr(kind, "restore_artifacts", None)
        if callable(restore):
            try:
                await restore(ctx, tuple(cached))
            except Exception as exc:
                log.warning("stage kind %s: restore_artifacts raised %r", kind.name, exc)
                await ctx.log_line(
                    f"cache: could not put back the outputs of run #{cached[0].run_number}"
                    f" ({type(exc).__name__}: {exc}); building again"
                )
                return None
        await store.record_cache_hits(self.run.id, stage.name, cache_key, cached)
        self._keep(cached)
        first = cached[0]
        more = f" and {len(cached) - 1} more" if len(cached) > 1 else ""
        reason = f"cache hit: {first.digest}{more} from run #{first.run_number}"
        await ctx.log_line(f"{reason} (key {cache_key}); the stage's work is skipped")
        attributes = {
            **span_attributes(cached),
            a.CACHE_HIT: True,
            a.CACHE_ORIGINAL_RUN: first.run_id,
        }
        return StageOutcome(StageStatus.SUCCEEDED, reason, span_attributes=attributes)

    # -- recording ------------------------------------------------------------------

    def _timings(self, stage: StageRecord, now: float) -> tuple[StageTiming, ...]:
        """The stage and every stage it needs, transitively, in run order."""
        wanted = {stage.name}
        pending = list(stage.needs)
        while pending:
            name = pending.pop()
            if name not in wanted:
                wanted.add(name)
                pending += self.run.stage(name).needs
        return tuple(
            StageTiming(
                record.name,
                record.started_at,
                record.finished_at if record is not stage else now,
            )
            for record in self.run.stages
            if record.name in wanted
        )

    @staticmethod
    def _parameters(spec: StageSpec) -> Mapping[str, Any]:
        parameters: dict[str, Any] = {"with": dict(spec.with_)}
        if spec.run:
            parameters["run"] = list(spec.run)
        if spec.inputs:
            parameters["inputs"] = list(spec.inputs)
        return parameters

    async def _record(
        self,
        stage: StageRecord,
        spec: StageSpec,
        kind: StageKind,
        ctx: StageContext,
        outcome: StageOutcome,
        dirty: list[str],
        cache_key: str,
    ) -> StageOutcome:
        if self.deps is None:
            return outcome
        try:
            for out in outcome.artifacts:
                check_output(out)
        except InvalidOutput as exc:
            owner = self.plugins.owner_of(kind.name)
            reason = (
                f"stage kind {kind.name!r} (plugin {owner}) returned an invalid artifact: {exc}"
            )
            await ctx.log_line(reason)
            return StageOutcome(
                StageStatus.FAILED, reason, error_type="invalid_artifact", system_error=True
            )
        run, deps = self.run, self.deps
        now = time.time()
        kept = tuple(dirty[:KEPT_FILES])
        drafts = [
            ArtifactDraft(
                output=out,
                version=run.version,
                stages=self._timings(stage, now),
                facts=BuildFacts(
                    subject_name=out.name,
                    digest=out.digest,
                    repository=run.repository,
                    ref=run.ref,
                    commit=run.commit,
                    pipeline=run.pipeline,
                    run_id=run.id,
                    run_number=run.number,
                    stage=stage.name,
                    stage_kind=spec.uses,
                    parameters=self._parameters(spec),
                    started_at=stage.started_at or now,
                    finished_at=now,
                    builder_id=deps.builder_id,
                    builder_version=deps.builder_version,
                    version=run.version,
                    changed_files=kept,
                    changed_files_total=len(dirty),
                    trace_id=run.trace_id,
                ),
                trace_id=run.trace_id,
                span_id=run.span_id,
                changed_files=kept,
                # a dirty build is never reused: its output is not the commit's
                cache_key="" if dirty else cache_key,
                created_at=now,
            )
            for out in outcome.artifacts
        ]
        try:
            recorded = await deps.store.record(
                drafts, deps.seal, overwrite_tags=spec.overwrite_tags
            )
        except TagConflict as exc:
            await ctx.log_line(f"{exc}; nothing was recorded")
            return StageOutcome(StageStatus.FAILED, str(exc), error_type="tag_conflict")
        artifacts = [item.artifact for item in recorded]
        self._keep(artifacts)
        for item in recorded:
            art = item.artifact
            verb = "recorded" if item.created else "updated"
            tags = f", tags {', '.join(art.tags)}" if art.tags else ""
            await ctx.log_line(
                f"{verb} artifact {art.digest} ({art.name}, version {art.version}{tags});"
                f" provenance signed by {art.key_id}"
            )
            self.plugins.artifact_produced(run, art)
        attributes = {**outcome.span_attributes, **span_attributes(artifacts)}
        return dataclasses.replace(outcome, span_attributes=attributes)
