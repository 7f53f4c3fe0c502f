"""What the ``docker`` and ``swarm`` deploy targets share: engine calls off
the trio loop, and the image an artifact names.

Every call connects to the daemon's engine (``DOCKER_HOST``, as for the
build and push kinds: :mod:`conveyor.plugins.docker.engine`), makes its SDK
calls and closes, in one worker thread bounded by the Docker kinds' limiter.
A call is never abandoned: cancellation waits for the thread (an engine call
takes milliseconds, a container stop at most its grace period), so what it
started is always known.

Images are never pulled nor resolved: an artifact runs as the image the
engine holds, by digest (see :func:`image_reference`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import docker
import trio
from docker.errors import ImageNotFound, NotFound
from pydantic import ValidationError

from conveyor.plugin import OCI_IMAGE, Artifact, Parameters, TargetError, parameter_problems
from conveyor.plugins.docker.engine import STREAM_ERRORS, connect, engine_address, explain, limiter
from conveyor.plugins.reporting.frame import StageFailure

T = TypeVar("T")


async def call(action: str, fn: Callable[[docker.APIClient], T]) -> T:
    """``fn(client)`` with a fresh client of the engine, in a worker thread.

    Errors: :class:`TargetError` when the engine cannot be reached or an SDK
    call fails (``action`` names what was being done); ``fn`` handles the
    errors it expects (a container already gone) itself.
    """

    def work() -> T:
        client = connect()
        try:
            return fn(client)
        finally:
            client.close()

    try:
        return await trio.to_thread.run_sync(work, limiter=limiter())
    except StageFailure as exc:
        raise TargetError(exc.reason) from None
    except TargetError:
        raise
    except STREAM_ERRORS as exc:
        raise TargetError(
            f"{action}: the Docker engine at {engine_address()} failed: {explain(exc)}"
        ) from None


def image_reference(artifact: Artifact) -> str:
    """The name an artifact's image runs as: ``<repository>@<manifest
    digest>`` once it was pushed, else its image id (``sha256:...``).

    Both pin the exact image: the engine never resolves them to another.
    """
    if artifact.pushed_to and artifact.manifest_digest:
        return f"{artifact.pushed_to[0]}@{artifact.manifest_digest}"
    return artifact.digest


def local_image(client: docker.APIClient, artifact: Artifact) -> str:
    """The reference of the artifact's image as this engine holds it
    (blocking): :func:`image_reference` when the engine knows that name for
    this image, else the image id.

    Raises :class:`TargetError` when the artifact is not an image or the
    engine does not have it (nothing is pulled).
    """
    if artifact.kind != OCI_IMAGE:
        raise TargetError(
            f"artifact {artifact.digest} is a {artifact.kind!r}, not an {OCI_IMAGE!r}:"
            " the docker and swarm targets run container images"
        )
    for reference in dict.fromkeys((image_reference(artifact), artifact.digest)):
        try:
            details: Mapping[str, Any] = client.inspect_image(reference)  # type: ignore[no-untyped-call]
        except (ImageNotFound, NotFound):
            continue
        if details.get("Id") == artifact.digest:
            return reference
    where = f" (pushed to {', '.join(artifact.pushed_to)})" if artifact.pushed_to else ""
    raise TargetError(
        f"the Docker engine at {engine_address()} has no image {artifact.digest}"
        f" ({artifact.name}){where}; images are never pulled for a deployment:"
        f" build it on this engine, or pull {image_reference(artifact)} first"
    )


#: Lines of a replica's output quoted when it fails.
TAIL_LINES = 20


def container_tail(client: docker.APIClient, container: str) -> str:
    """The last :data:`TAIL_LINES` lines a container wrote (stdout and
    stderr), "" when it is gone (blocking)."""
    try:
        data = client.logs(container, stdout=True, stderr=True, tail=TAIL_LINES)
    except (NotFound, ImageNotFound):
        return ""
    text = data.decode(errors="replace") if isinstance(data, bytes) else ""
    return text.strip()


def labels_match(labels: Mapping[str, str] | None, wanted: Mapping[str, str]) -> bool:
    """Whether ``labels`` carry every ``wanted`` label with its value."""
    have = labels or {}
    return all(have.get(key) == value for key, value in wanted.items())


def option_problems(
    options: Mapping[str, Any], model: type[Parameters], target: str
) -> list[tuple[str, str]]:
    """An environment's ``with:`` options checked against ``model``, as
    ``DeployTarget.validate`` yields them (``("with.init", "expected true or
    false, got ...")``)."""
    try:
        model.model_validate(dict(options))
    except ValidationError as exc:
        return [
            (where, text.replace(f"the {target} kind accepts", f"the {target} target accepts"))
            for where, text in parameter_problems(exc, model, target)
        ]
    return []
