"""What a stage kind plugin implements and what it is given to work with."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from conveyor.daemon.artifacts.model import Artifact, ArtifactOutput, RegistryCredential
from conveyor.daemon.executors.base import (
    ContainerSpec,
    Executor,
    ProcessRequest,
    StageOutput,
    conveyor_line,
)
from conveyor.daemon.pipeline import StageSpec
from conveyor.daemon.records import StageStatus
from conveyor.daemon.reports import StageReport
from conveyor.daemon.views import Deployment, Run


@dataclass(frozen=True)
class StageOutcome:
    """How a stage attempt ended. ``status`` is SUCCEEDED or FAILED."""

    status: StageStatus
    reason: str = ""
    exit_code: int | None = None
    #: A short, low-cardinality class of failure for telemetry (``error.type``).
    error_type: str = ""
    #: True when Conveyor or a plugin failed rather than the code under test.
    system_error: bool = False
    #: Attributes for the stage's span, e.g. ``artifact.hash`` from a build
    #: stage (see docs/telemetry.md).
    span_attributes: Mapping[str, str | int | float | bool | Sequence[str]] = field(
        default_factory=dict
    )
    #: Parsed results (lint findings, test counts, scan findings) and the
    #: gate's decision, stored with the stage and served over the API.
    report: StageReport | None = None
    #: What the attempt produced (or, for a push, updated); see
    #: :class:`~conveyor.daemon.artifacts.model.ArtifactOutput`. Only read
    #: from a SUCCEEDED outcome.
    artifacts: tuple[ArtifactOutput, ...] = ()

    @classmethod
    def from_exit_code(cls, code: int) -> StageOutcome:
        """0: succeeded; a positive code: failed (``exit code N``); a
        negative one: failed (``killed by signal N``)."""
        if code == 0:
            return cls(StageStatus.SUCCEEDED, "", 0)
        if code < 0:
            return cls(StageStatus.FAILED, f"killed by signal {-code}", code, "signal")
        return cls(StageStatus.FAILED, f"exit code {code}", code, "exit_code")


async def _no_tag(name: str, tag: str) -> str | None:
    return None


class DeploymentError(Exception):
    """A deployment was refused before it started (an unknown environment
    or artifact, an environment busy with another deployment, a promotion
    from an environment where nothing healthy runs); the message says why."""


class Deployments(Protocol):
    """What a stage may deploy with (``ctx.deployments``): the daemon's
    deployment service, on behalf of the stage's run."""

    async def deploy(
        self, environment: str, artifact: str, *, promote_from: str = ""
    ) -> Deployment:
        """Deploy ``artifact`` (a digest) to ``environment`` — or, with
        ``promote_from``, promote the digest that is deployed and healthy in
        that environment (``artifact`` is then ignored) — and wait until the
        deployment ends: ``healthy``, ``failed``, ``rolled_back``,
        ``rejected`` or ``expired`` (an environment that requires approval
        waits for it). Its progress goes to the stage log.

        The deployer recorded is the stage's run (``run:<id>``). Raises
        :class:`DeploymentError` when the deployment is refused. Cancelling
        the stage stops the wait, not the deployment.
        """
        ...


class _NoDeployments:
    async def deploy(
        self, environment: str, artifact: str, *, promote_from: str = ""
    ) -> Deployment:
        raise DeploymentError("this daemon gives stages no deployments (ctx.deployments)")


@dataclass
class StageContext:
    """Everything a stage attempt may use. Passed to :meth:`StageKind.run`."""

    #: The run as it was when the attempt started.
    run: Run
    name: str
    spec: StageSpec
    attempt: int
    workspace: Path
    #: The complete environment for the stage's processes.
    env: Mapping[str, str]
    executor: Executor
    #: The stage's log: ``await ctx.log.write(data)`` appends raw output.
    log: StageOutput
    kill_grace: float
    #: An empty folder for this attempt's machine-readable reports (JUnit,
    #: SARIF, JSON), outside the workspace. Created on first use by the kind.
    reports_dir: Path = Path()
    #: The run's version (SemVer 2.0.0): a ``vX.Y.Z`` tag on the commit, else
    #: the pipeline's ``version:`` with the run number as pre-release.
    version: str = ""
    #: Artifacts the run has recorded so far (earlier stages' outputs and
    #: cache hits), oldest first.
    artifacts: tuple[Artifact, ...] = ()
    #: Looks up a registry login the daemon holds, by the name a stage gives
    #: (``with: {credentials: NAME}``); None when there is no such login.
    credential_lookup: Callable[[str], RegistryCredential | None] = field(
        default=lambda name: None, repr=False
    )
    #: The daemon's content-addressed file store (``$CONVEYOR_HOME/artifacts``):
    #: a kind that keeps files puts each at ``sha256/<hex digest>`` in it.
    artifact_store: Path = Path()
    #: Looks up the digest a tag names in the daemon's records; see
    #: :meth:`tag_digest`.
    tag_lookup: Callable[[str, str], Awaitable[str | None]] = field(default=_no_tag, repr=False)
    #: The daemon's deployments, for kinds that deploy (the ``deploy``
    #: kind): ``await ctx.deployments.deploy(environment, digest)``.
    deployments: Deployments = field(default_factory=_NoDeployments, repr=False)
    #: The container the stage's processes run in (its executor runs
    #: containers: ``executor: docker`` or ``swarm``), or None. Inside it,
    #: the workspace is at ``container.container_path(ctx.workspace)``.
    container: ContainerSpec | None = None

    def credential(self, name: str) -> RegistryCredential | None:
        """The daemon-side registry login called ``name``, if any."""
        return self.credential_lookup(name)

    async def tag_digest(self, name: str, tag: str) -> str | None:
        """The digest the daemon's records say the tag ``name:tag`` names,
        or None. A kind that publishes tags elsewhere (a registry) checks
        here first: the daemon refuses to move a tag to another digest
        unless the stage says ``overwrite_tags: true``."""
        return await self.tag_lookup(name, tag)

    async def log_line(self, text: str) -> None:
        """Write a line from Conveyor itself into the stage log, on a line of
        its own: after a tool's unterminated last line, a newline first."""
        await self.log.write(conveyor_line(text, at_line_start=self.log.at_line_start))

    async def run_process(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Run one process through the stage's executor; return its exit code.

        Its output goes to the stage log. Cancelling the stage stops it.
        """
        request = ProcessRequest(
            argv=argv,
            cwd=cwd or self.workspace,
            env={**self.env, **(env or {})},
            kill_grace=self.kill_grace,
            container=self.container,
        )
        return await self.executor.run(request, self.log)


class StageKind(Protocol):
    """A kind of stage (``uses:`` in the pipeline file), contributed by a
    plugin through ``conveyor_stage_kinds``."""

    #: The name used in ``uses:``.
    name: str
    #: One line for ``conveyor plugins`` and the docs.
    description: str

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        """Check a stage's parameters when the pipeline file is loaded.

        Yield ``(field, message)`` pairs, ``field`` relative to the stage
        (``"run"``, ``"with.image"``); nothing when valid.
        """
        ...

    # Optional attributes a kind may have (read with getattr):
    #
    # produces_artifacts: bool
    #     True for kinds whose outcome carries artifacts (build, file). Before
    #     such a stage runs, and after it, the daemon checks that the
    #     workspace's tracked files equal the commit's tree.
    # task_type: str
    #     The stages' ``cicd.pipeline.task.type`` in telemetry: "build",
    #     "test" or "deploy" (the CICD conventions' well-known values).
    # def cache_inputs(self, spec: StageSpec) -> Iterable[str]
    #     Repository paths (besides the stage's ``inputs:``) whose content
    #     goes into the stage's cache key, e.g. the Dockerfile.
    # async def artifact_available(self, artifact: Artifact) -> bool
    #     Whether an artifact this kind produced still exists (the file is
    #     in the store, the image in the engine). Asked before a cache hit
    #     reuses it; False (or an exception) makes the stage build again.

    async def run(self, ctx: StageContext) -> StageOutcome:
        """Do the stage's work. Raise nothing for an ordinary failure: return
        a FAILED outcome. An exception fails the stage with its traceback in
        the log. Must let ``trio.Cancelled`` propagate."""
        ...
