"""The ``push`` stage kind: the run's images, with all their tags, to the
registry their name gives.

```yaml
stages:
  push:
    uses: push
    needs: [image]
    with:
      image: 127.0.0.1:5000/team/app   # default: every image the run built
      credentials: ci                  # a login the daemon holds (registry_credentials)
      overwrite_tags: false            # default: a version tag never moves
```

What is pushed is what the run recorded: the ``oci-image`` artifacts of
earlier stages (``ctx.artifacts``), by digest. Each artifact's tags are set
on its image id first, so a tag moved locally by another build cannot make
the push send something else.

**Logins** come from the Docker configuration of the daemon's user
(``~/.docker/config.json`` or ``$DOCKER_CONFIG``, as ``docker login`` writes
it), or, with ``credentials: NAME``, from the daemon's
``registry_credentials`` setting. A pipeline file never holds a password.

**Immutability.** Before anything is pushed, the registry is asked what
each tag names (Registry HTTP API v2). A tag that names another image
(another config digest) refuses the whole stage, and nothing is pushed,
unless ``overwrite_tags: true``. Commit tags (``sha-<12 hex>``) are the
exception: they name the commit and move to its newest build.

The outcome updates each artifact with where it went (``pushed_to``) and the
manifest digest the registry returned; the span gets
``oci.manifest.digest``, ``container.image.name``, ``container.image.tags``,
``artifact.hash`` and ``artifact.version``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Final

import docker
import requests
import trio
from docker.auth import load_config
from docker.errors import DockerException, NotFound
from pydantic import AfterValidator

from conveyor.plugin import (
    OCI_IMAGE,
    Artifact,
    ArtifactOutput,
    Parameters,
    RegistryCredential,
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
    ResponseCutter,
    engine_client,
    engine_failure,
    explain,
    limiter,
    run_cuttable,
)
from conveyor.plugins.docker.progress import ProgressLog
from conveyor.plugins.docker.references import check_repository, is_commit_tag, split_repository
from conveyor.plugins.docker.registry import (
    Login,
    RegistryClient,
    RegistryError,
    TagState,
    is_insecure,
)
from conveyor.plugins.reporting.frame import ReportingStage, StageFailure

_CREDENTIALS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: ``with:`` keys people write when they mean ``credentials``.
SECRET_KEYS: Final = ("password", "username", "token", "auth", "login", "user")


def _credentials_name(name: str) -> str:
    if name and _CREDENTIALS_NAME.match(name) is None:
        raise ValueError(
            f"{name!r} is not a login name (letters, digits, _, . and -): name a login"
            " of the daemon's registry_credentials setting"
        )
    return name


class PushParameters(Parameters):
    """``with:`` of a ``push`` stage."""

    #: Push only the run's images of this repository (default: all of them).
    image: Annotated[str, AfterValidator(lambda n: check_repository(n) if n else n)] = ""
    #: A registry login of the daemon (``registry_credentials``), by name.
    credentials: Annotated[str, AfterValidator(_credentials_name)] = ""
    #: Let a tag move to another image in the registry.
    overwrite_tags: bool = False


PARAMETERS = tuple(PushParameters.model_fields)


@dataclass(frozen=True)
class PushPlan:
    """One artifact to push: its repository and registry, the tags, the login."""

    artifact: Artifact
    registry: str
    path: str
    tags: tuple[str, ...]
    login: Login | None


@dataclass(frozen=True)
class Pushed:
    manifest_digest: str


def select_artifacts(ctx: StageContext, params: PushParameters) -> list[Artifact]:
    """The run's images to push; StageFailure when there is none."""
    images = [a for a in ctx.artifacts if a.kind == OCI_IMAGE]
    if params.image:
        chosen = [a for a in images if a.name == params.image]
        if not chosen:
            built = ", ".join(sorted({a.name for a in images})) or "none"
            raise StageFailure(
                f"with.image: this run recorded no image of {params.image!r} (images: {built});"
                " does the stage need the build stage that makes it?",
                error_type="no_artifact",
            )
        return chosen
    if not images:
        raise StageFailure(
            "no image to push: no earlier stage of this run recorded one (add the build"
            " stage to this stage's needs)",
            error_type="no_artifact",
        )
    return images


def registry_login(
    ctx: StageContext, params: PushParameters, registry: str
) -> tuple[Login | None, dict[str, str] | None]:
    """The login for ``registry`` named by ``with.credentials`` (and the SDK's
    ``auth_config`` for it), or (None, None) to use the Docker config."""
    if not params.credentials:
        return None, None
    credential: RegistryCredential | None = ctx.credential(params.credentials)
    if credential is None:
        raise StageFailure(
            f"with.credentials: the daemon has no registry login {params.credentials!r}"
            " (see the registry_credentials setting)",
            error_type="no_credentials",
        )
    if credential.registry != registry:
        raise StageFailure(
            f"with.credentials: login {params.credentials!r} is for registry"
            f" {credential.registry}, not {registry}; it is not sent elsewhere",
            error_type="wrong_registry",
        )
    auth_config = {
        "username": credential.username,
        "password": credential.password,
        "serveraddress": registry,
    }
    return Login(credential.username, credential.password), auth_config


def config_login(registry: str) -> Login | None:
    """The Docker config's login for ``registry`` (blocking), if any."""
    try:
        found = load_config().resolve_authconfig(registry)
    except DockerException:
        return None
    if not found:
        return None
    username = found.get("username") or found.get("Username") or ""
    password = found.get("password") or found.get("Password") or ""
    return Login(username, password) if username or password else None


def check_tags(
    plans: Sequence[PushPlan], registry_config: dict[str, Any], overwrite: bool
) -> list[str]:
    """Ask each registry what the tags name (blocking). Returns the refusals
    (empty: every tag is free, names the same image, or may move)."""
    refusals: list[str] = []
    clients: dict[str, RegistryClient] = {}
    for plan in plans:
        for tag in plan.tags:
            if is_commit_tag(tag):
                continue
            client = clients.get(plan.registry)
            if client is None:
                insecure = is_insecure(plan.registry, registry_config)
                client = clients[plan.registry] = RegistryClient(
                    plan.registry, plan.login, insecure=insecure
                )
            state: TagState | None = client.tag(plan.path, tag)
            if state is None or state.config_digest == plan.artifact.digest:
                continue
            names = (
                state.config_digest or f"a {state.media_type or 'manifest'} {state.manifest_digest}"
            )
            if not overwrite:
                refusals.append(
                    f"{plan.artifact.name}:{tag} already names {names} in the registry, not"
                    f" {plan.artifact.digest}"
                )
    return refusals


def _push(
    api: docker.APIClient,
    artifact: Artifact,
    auth_config: dict[str, str] | None,
    output: StageOutput,
    cutter: ResponseCutter,
) -> Pushed:
    """Tag the image id with each tag and push them (blocking: a worker thread)."""
    digests: list[str] = []
    with output.open_writer() as writer:
        for tag in artifact.tags:
            cutter.check()
            progress = ProgressLog(writer)
            try:
                api.tag(artifact.digest, artifact.name, tag, force=True)
            except NotFound:
                raise StageFailure(
                    f"image {artifact.digest} ({artifact.name}) is no longer in the Docker engine",
                    error_type="image_missing",
                ) from None
            except (DockerException, requests.RequestException) as exc:
                raise engine_failure(f"tagging {artifact.name}:{tag}", exc) from None
            try:
                stream = api.push(
                    artifact.name, tag=tag, stream=True, decode=True, auth_config=auth_config
                )
                progress.feed_all(stream)
            except STREAM_ERRORS as exc:
                cutter.check()
                raise StageFailure(
                    f"docker push {artifact.name}:{tag} failed: {explain(exc)}",
                    error_type="push_failed",
                ) from None
            cutter.check()
            if progress.error:
                raise StageFailure(
                    f"docker push {artifact.name}:{tag} failed: {progress.error}",
                    error_type="push_failed",
                )
            digest = progress.aux_value("Digest")
            if not digest:
                raise StageFailure(
                    f"docker push {artifact.name}:{tag}: the engine reported no manifest digest",
                    error_type="push_failed",
                    system_error=True,
                )
            digests.append(digest)
    if len(set(digests)) > 1:  # the same image under every tag: one manifest
        raise StageFailure(
            f"the tags of {artifact.name} were pushed as different manifests: {', '.join(digests)}",
            error_type="push_failed",
            system_error=True,
        )
    return Pushed(digests[0])


async def refuse_moving_tags(
    ctx: StageContext, api: docker.APIClient, plans: Sequence[PushPlan], *, overwrite: bool
) -> None:
    """Raise StageFailure when a tag other than a commit tag names another
    image in its registry (unless ``overwrite``), or the registry cannot say."""
    checked = [f"{p.artifact.name}:{t}" for p in plans for t in p.tags if not is_commit_tag(t)]
    if not checked:
        return
    try:  # which registries the engine reaches without TLS checks
        info = await trio.to_thread.run_sync(api.info, limiter=limiter())
    except (DockerException, requests.RequestException) as exc:
        raise engine_failure("docker info", exc) from None
    await ctx.log_line(f"checking the tags in the registry: {', '.join(checked)}")
    try:
        refusals = await trio.to_thread.run_sync(
            check_tags,
            plans,
            info.get("RegistryConfig") or {},
            overwrite,
            limiter=limiter(),
            abandon_on_cancel=True,
        )
    except RegistryError as exc:
        raise StageFailure(str(exc), error_type="registry_error") from None
    if refusals:
        for refusal in refusals:
            await ctx.log_line(refusal)
        raise StageFailure(
            f"refused to move {len(refusals)} tag(s) to another image ({refusals[0]});"
            " nothing was pushed (set with.overwrite_tags: true to allow it)",
            error_type="tag_exists",
        )


class PushStage(ReportingStage[PushParameters]):
    name = "push"
    description = "Push the run's images with their tags to their registry; version tags never move"
    parameters = PushParameters

    def check(self, spec: StageSpec, params: PushParameters | None) -> Iterable[tuple[str, str]]:
        if spec.run:
            yield "run", "a push stage takes no 'run' commands: it pushes the run's images"
        for key in spec.with_:
            if key in SECRET_KEYS:
                yield (
                    f"with.{key}",
                    "registry logins are never written in the pipeline file: name a login"
                    " the daemon holds with 'with.credentials' (its registry_credentials"
                    " setting), or log in the daemon's user with docker login",
                )

    async def execute(self, ctx: StageContext, params: PushParameters) -> StageOutcome:
        artifacts = select_artifacts(ctx, params)
        plans: list[PushPlan] = []
        auth: dict[str, dict[str, str] | None] = {}
        for artifact in artifacts:
            if not artifact.tags:
                raise StageFailure(
                    f"image {artifact.name} ({artifact.digest}) has no tags to push",
                    error_type="no_tags",
                )
            registry, path = split_repository(artifact.name)
            login, auth_config = registry_login(ctx, params, registry)
            if login is None:
                login = await trio.to_thread.run_sync(config_login, registry, limiter=limiter())
            auth[artifact.digest] = auth_config
            plans.append(PushPlan(artifact, registry, path, artifact.tags, login))

        cutter = ResponseCutter()
        async with engine_client() as api:
            cutter.watch(api)
            await refuse_moving_tags(ctx, api, plans, overwrite=params.overwrite_tags)
            outputs: list[ArtifactOutput] = []
            for plan in plans:
                artifact = plan.artifact
                await ctx.log_line(
                    f"docker push {artifact.name} ({', '.join(artifact.tags)}) of {artifact.digest}"
                )
                work = partial(_push, api, artifact, auth[artifact.digest], ctx.log, cutter)
                pushed = await run_cuttable(work, cutter)
                await ctx.log_line(f"pushed {artifact.name}@{pushed.manifest_digest}")
                outputs.append(
                    ArtifactOutput(
                        kind=artifact.kind,
                        name=artifact.name,
                        digest=artifact.digest,
                        size=artifact.size,
                        tags=artifact.tags,
                        media_type=artifact.media_type,
                        pushed_to=artifact.name,
                        manifest_digest=pushed.manifest_digest,
                    )
                )
        return StageOutcome(
            StageStatus.SUCCEEDED,
            "pushed " + ", ".join(f"{o.name}@{o.manifest_digest}" for o in outputs),
            span_attributes=span_attributes(artifacts, outputs),
            artifacts=tuple(outputs),
        )


def span_attributes(
    artifacts: Sequence[Artifact], outputs: Sequence[ArtifactOutput]
) -> dict[str, str | int | float | bool | Sequence[str]]:
    """The pushed images on the stage's span (several: comma-separated)."""
    span: dict[str, str | int | float | bool | Sequence[str]] = {
        "container.image.name": ",".join(o.name for o in outputs),
        "container.image.tags": [t for o in outputs for t in o.tags],
        "artifact.hash": ",".join(o.digest for o in outputs),
        "oci.manifest.digest": ",".join(o.manifest_digest for o in outputs),
    }
    versions = sorted({a.version for a in artifacts if a.version})
    if versions:
        span["artifact.version"] = ",".join(versions)
    return span


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [PushStage()]
