"""The ``build`` stage kind: an OCI image built by the Docker engine from the
run's checkout.

```yaml
stages:
  image:
    uses: build
    with:
      image: 127.0.0.1:5000/team/app   # the repository, without a tag
      context: .                       # default: the repository root
      dockerfile: docker/Dockerfile    # default: <context>/Dockerfile
      target: runtime                  # a stage of a multi-stage Dockerfile
      build_args: {PYTHON: "3.11"}
      labels: {com.example.team: payments}
```

The image is built with the Docker SDK's ``APIClient.build`` (the engine's
classic builder), intermediate containers always removed. Its tags are the
run's version (``+`` written ``_``: ``1.4.0-rc.12_sha.1a2b3c4d5e6f``) and
``sha-<12 hex of the commit>``; its labels the OCI annotations
``org.opencontainers.image.revision`` (the commit), ``.source`` (the
repository), ``.version`` (the run's version), ``.created`` (now, RFC 3339)
and ``dev.conveyor.run`` (the run id), over the stage's own ``labels``.

The builder's output streams into the stage log as it comes. A build that
fails (the builder's error in its stream) fails the stage with that error
as the reason. A cancelled stage (timeout, run cancelled) disconnects from
the engine, which stops the build; the builder's container is removed.

The outcome carries one ``oci-image`` artifact: the image id (the config
digest, ``sha256:...``) as its digest, its size and tags; the stage's span
gets ``container.image.name``, ``container.image.tags``, ``artifact.hash``
and ``artifact.version``.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Final

import docker
import requests
import trio
from docker.errors import APIError, DockerException, NotFound
from pydantic import AfterValidator

from conveyor.plugin import (
    OCI_IMAGE,
    Artifact,
    ArtifactOutput,
    Parameters,
    StageContext,
    StageKind,
    StageOutcome,
    StageOutput,
    StageSpec,
    StageStatus,
    hookimpl,
)
from conveyor.plugins.docker.engine import (
    STREAM_ERRORS,
    Cut,
    ResponseCutter,
    connect,
    engine_client,
    engine_failure,
    explain,
    limiter,
    run_cuttable,
)
from conveyor.plugins.docker.progress import ProgressLog
from conveyor.plugins.docker.references import (
    check_repository,
    check_tag,
    commit_tag,
    docker_tag,
)
from conveyor.plugins.parameters import OptionalWorkspaceFile, read_parameters
from conveyor.plugins.reporting.frame import ReportingStage, StageFailure

#: The media type of what an image id is the digest of: the image's config.
IMAGE_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
#: Labels Conveyor sets on every image it builds.
REVISION: Final = "org.opencontainers.image.revision"
SOURCE: Final = "org.opencontainers.image.source"
VERSION: Final = "org.opencontainers.image.version"
CREATED: Final = "org.opencontainers.image.created"
RUN: Final = "dev.conveyor.run"
RESERVED_LABELS: Final = (REVISION, SOURCE, VERSION, CREATED, RUN)
#: Seconds allowed for removing the builder's container after a cancelled build.
CLEANUP_TIMEOUT: Final = 15.0

_BUILD_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _build_args(args: dict[str, str]) -> dict[str, str]:
    for name in args:
        if _BUILD_ARG.match(name) is None:
            raise ValueError(f"{name!r} is not a build argument name (letters, digits, _)")
    return args


def _labels(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if not name:
            raise ValueError("a label name must not be empty")
        if name in RESERVED_LABELS:
            raise ValueError(f"label {name!r} is set by Conveyor; leave it out")
    return labels


def _target(target: str) -> str:
    if target and _TARGET.match(target) is None:
        raise ValueError(f"{target!r} is not a build stage name")
    return target


class BuildParameters(Parameters):
    """``with:`` of a ``build`` stage."""

    #: The repository the image is tagged in, without a tag.
    image: Annotated[str, AfterValidator(check_repository)]
    #: The build context, relative to the repository root.
    context: OptionalWorkspaceFile = "."
    #: The Dockerfile, relative to the repository root (default: in the context).
    dockerfile: OptionalWorkspaceFile = ""
    target: Annotated[str, AfterValidator(_target)] = ""
    build_args: Annotated[dict[str, str], AfterValidator(_build_args)] = {}
    labels: Annotated[dict[str, str], AfterValidator(_labels)] = {}

    @property
    def context_path(self) -> str:
        return posixpath.normpath(self.context or ".")

    @property
    def dockerfile_path(self) -> str:
        """The Dockerfile relative to the repository root."""
        return posixpath.normpath(
            self.dockerfile or posixpath.join(self.context_path, "Dockerfile")
        )


PARAMETERS = tuple(BuildParameters.model_fields)


@dataclass(frozen=True)
class BuildRequest:
    """What one build asks the engine for."""

    context: Path
    #: The Dockerfile as the SDK takes it: relative to the context when it is
    #: inside, else an absolute path (the SDK adds it to the context).
    dockerfile: str
    image: str
    tags: tuple[str, ...]
    target: str
    build_args: Mapping[str, str]
    labels: Mapping[str, str]


@dataclass
class BuildProgress:
    """What the worker thread learnt, readable once it returned."""

    container: str = ""


@dataclass(frozen=True)
class BuiltImage:
    id: str
    size: int


def locate(workspace: Path, params: BuildParameters) -> tuple[Path, Path]:
    """The build context folder and the Dockerfile in the checkout (blocking).

    Raises StageFailure when either is missing or leads outside the
    checkout (through a symbolic link).
    """
    root = workspace.resolve()
    context = (root / params.context_path).resolve()
    dockerfile = (root / params.dockerfile_path).resolve()
    for name, path, value in (
        ("context", context, params.context_path),
        ("dockerfile", dockerfile, params.dockerfile_path),
    ):
        if not path.is_relative_to(root):
            raise StageFailure(
                f"with.{name}: {value!r} leads outside the checkout (through a symbolic link)",
                error_type="outside_checkout",
            )
    if not context.is_dir():
        raise StageFailure(
            f"with.context: no folder {params.context_path!r} in the commit",
            error_type="context_missing",
        )
    if not dockerfile.is_file():
        raise StageFailure(
            f"no Dockerfile at {params.dockerfile_path!r} in the commit"
            + ("" if params.dockerfile else " (set with.dockerfile to use another file)"),
            error_type="dockerfile_missing",
        )
    return context, dockerfile


def image_tags(ctx: StageContext) -> tuple[str, ...]:
    """The run's version as a tag (when it has one), then the commit's tag."""
    tags: list[str] = []
    if ctx.version:
        try:
            tags.append(check_tag(docker_tag(ctx.version)))
        except ValueError as exc:
            raise StageFailure(
                f"the run's version cannot be a tag: {exc}", error_type="bad_version"
            ) from None
    tags.append(commit_tag(ctx.run.commit))
    return tuple(tags)


def source_url(repository: str) -> str:
    """The repository as a URL (a path on the daemon's machine is ``file://``)."""
    if "://" in repository:
        return repository
    return Path(repository).absolute().as_uri() if repository.startswith("/") else repository


def oci_labels(ctx: StageContext) -> dict[str, str]:
    """The labels Conveyor puts on the image (``created``: now, by the daemon's clock)."""
    created = datetime.now(UTC)
    labels = {
        REVISION: ctx.run.commit,
        SOURCE: source_url(ctx.run.repository),
        CREATED: created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        RUN: ctx.run.id,
    }
    if ctx.version:
        labels[VERSION] = ctx.version
    return labels


def _build(
    api: docker.APIClient,
    request: BuildRequest,
    output: StageOutput,
    progress_state: BuildProgress,
    cutter: ResponseCutter,
) -> BuiltImage:
    """Build, tag and inspect the image (blocking: a worker thread)."""
    with output.open_writer() as writer:
        progress = ProgressLog(writer)
        try:
            stream = api.build(
                path=str(request.context),
                dockerfile=request.dockerfile,
                tag=f"{request.image}:{request.tags[0]}",
                target=request.target or None,
                buildargs=dict(request.build_args),
                labels=dict(request.labels),
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                timeout=None,  # a quiet step may take long; the stage's timeout bounds it
            )
            for chunk in stream:
                progress.feed(chunk)
                progress_state.container = progress.container
        except STREAM_ERRORS as exc:
            cutter.check()
            if isinstance(exc, APIError) and exc.is_client_error():
                raise StageFailure(
                    f"docker build failed: {explain(exc)}", error_type="build_failed"
                ) from None
            raise engine_failure("docker build", exc) from None
        cutter.check()
        if progress.error:
            raise StageFailure(f"docker build failed: {progress.error}", error_type="build_failed")
        image_id = progress.aux_value("ID")
        if not image_id:
            raise StageFailure(
                "docker build ended without naming the image it built",
                error_type="build_failed",
                system_error=True,
            )
        try:
            for tag in request.tags[1:]:
                api.tag(image_id, request.image, tag, force=True)
            details: dict[str, Any] = api.inspect_image(image_id)  # type: ignore[no-untyped-call]
            size = int(details.get("Size") or 0)
        except (DockerException, requests.RequestException) as exc:
            raise engine_failure(f"tagging {image_id}", exc) from None
    return BuiltImage(image_id, size)


def _remove_container(container: str, deadline: float) -> None:
    """Make sure the builder's container is gone (blocking)."""
    api = connect()
    try:
        while True:
            try:
                api.remove_container(container, force=True)
                return
            except NotFound:
                return
            except (DockerException, requests.RequestException):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)  # the engine is removing it already: look again
    finally:
        api.close()


async def remove_leftover(container: str) -> None:
    """After a cancelled build: remove the container the builder was running,
    if the engine has not done so already. Shielded, bounded in time."""
    if not container:
        return
    deadline = time.monotonic() + CLEANUP_TIMEOUT
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(CLEANUP_TIMEOUT),
        contextlib.suppress(StageFailure, DockerException, requests.RequestException),
    ):
        await trio.to_thread.run_sync(
            _remove_container, container, deadline, limiter=limiter(), abandon_on_cancel=True
        )


class BuildStage(ReportingStage[BuildParameters]):
    name = "build"
    description = "Build an OCI image with the Docker engine; tag it with the version and commit"
    parameters = BuildParameters
    #: The daemon checks the workspace equals the commit around this stage.
    produces_artifacts = True

    def cache_inputs(self, spec: StageSpec) -> list[str]:
        """The Dockerfile and the context's ``.dockerignore`` (repository
        paths; either may be missing), besides the stage's ``inputs:``."""
        params, _ = read_parameters(BuildParameters, spec, self.name)
        if params is None:
            return []
        ignore = posixpath.normpath(posixpath.join(params.context_path, ".dockerignore"))
        return [params.dockerfile_path, ignore]

    async def artifact_available(self, artifact: Artifact) -> bool:
        """Whether the engine still has the image (for a cache hit to reuse it)."""
        if artifact.kind != OCI_IMAGE:
            return False

        def present() -> bool:
            try:
                api = connect()
            except StageFailure:
                return False
            try:
                api.inspect_image(artifact.digest)  # type: ignore[no-untyped-call]
                return True
            except (DockerException, requests.RequestException):
                return False
            finally:
                api.close()

        return await trio.to_thread.run_sync(present, limiter=limiter())

    def check(self, spec: StageSpec, params: BuildParameters | None) -> Iterable[tuple[str, str]]:
        if spec.run:
            yield "run", "a build stage takes no 'run' commands: it builds 'with.dockerfile'"

    async def execute(self, ctx: StageContext, params: BuildParameters) -> StageOutcome:
        context, dockerfile = await trio.to_thread.run_sync(locate, ctx.workspace, params)
        tags = image_tags(ctx)
        request = BuildRequest(
            context=context,
            dockerfile=(
                str(dockerfile.relative_to(context))
                if dockerfile.is_relative_to(context)
                else str(dockerfile)
            ),
            image=params.image,
            tags=tags,
            target=params.target,
            build_args=params.build_args,
            labels={**params.labels, **oci_labels(ctx)},
        )
        await ctx.log_line(
            f"docker build {params.image}:{tags[0]} from {params.dockerfile_path}"
            f" (context {params.context_path}"
            + (f", target {params.target}" if params.target else "")
            + ")"
        )
        cutter = ResponseCutter()
        state = BuildProgress()
        async with engine_client() as api:
            cutter.watch(api)
            try:
                built = await run_cuttable(
                    partial(_build, api, request, ctx.log, state, cutter), cutter
                )
            except (trio.Cancelled, Cut):
                await remove_leftover(state.container)
                raise
        names = ", ".join(f"{params.image}:{tag}" for tag in tags)
        await ctx.log_line(f"built {built.id} ({built.size} bytes) tagged {names}")
        artifact = ArtifactOutput(
            kind=OCI_IMAGE,
            name=params.image,
            digest=built.id,
            size=built.size,
            tags=tags,
            media_type=IMAGE_CONFIG,
            attributes={
                "context": params.context_path,
                "dockerfile": params.dockerfile_path,
                "target": params.target,
            },
        )
        span: dict[str, str | int | float | bool | Sequence[str]] = {
            "container.image.name": params.image,
            "container.image.tags": list(tags),
            "artifact.hash": built.id,
        }
        if ctx.version:
            span["artifact.version"] = ctx.version
        return StageOutcome(
            StageStatus.SUCCEEDED,
            f"built {params.image}:{tags[0]}",
            span_attributes=span,
            artifacts=(artifact,),
        )


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [BuildStage()]
