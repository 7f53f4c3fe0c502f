"""What the ``docker`` and ``swarm`` executors share: checking a request,
names and labels of what they make, engine clients, and finding what an
interrupted run left behind."""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final, TypeVar

import docker
import requests
import trio
from docker.errors import DockerException
from docker.utils import kwargs_from_env

from conveyor.plugin import (
    LABEL_DAEMON,
    LABEL_RUN,
    LABEL_STAGE,
    ContainerSpec,
    ExecutorError,
    ProcessRequest,
)
from conveyor.plugins.docker.engine import STREAM_ERRORS, engine_address, explain, limiter

T = TypeVar("T")

#: Which executor made a container or service (``docker`` or ``swarm``).
LABEL_EXECUTOR: Final = "conveyor.executor"
#: Threads pumping a container's output: one per running stage process, kept
#: apart from the engine calls' limiter so long stages never starve them.
PUMP_THREADS: Final = 1024
_pumps: trio.CapacityLimiter | None = None
_version_lock = threading.Lock()
_api_version: str | None = None


def pump_limiter() -> trio.CapacityLimiter:
    global _pumps
    if _pumps is None:
        _pumps = trio.CapacityLimiter(PUMP_THREADS)
    return _pumps


@dataclass(frozen=True)
class ContainerRequest:
    """A request checked for a container executor: the container and the
    working directory inside it."""

    spec: ContainerSpec
    workdir: str


def checked(request: ProcessRequest, executor: str) -> ContainerRequest:
    """The request's container and working directory. Raises
    :class:`ExecutorError` when there is no container (the daemon sets one
    for every stage on a container executor), when the container's user is
    not the stage user the daemon confines stages to, or when the working
    directory is outside the workspace."""
    spec = request.container
    if spec is None:
        raise ExecutorError(
            f"the {executor} executor runs processes in containers; this request names none"
            " (a stage on it needs an image)"
        )
    if not request.argv:
        raise ExecutorError("nothing to run: the command is empty")
    user = request.user
    if user is not None and spec.user != f"{user.uid}:{user.gid}":
        raise ExecutorError(
            f"the container's user {spec.user} is not the stage user {user.name}"
            f" ({user.uid}:{user.gid}) this daemon runs stages as"
        )
    try:
        workdir = spec.container_path(request.cwd)
    except ValueError:
        raise ExecutorError(
            f"the {executor} executor runs processes in the workspace (mounted in the"
            f" container); {request.cwd} is outside it"
        ) from None
    return ContainerRequest(spec, workdir)


def labels(spec: ContainerSpec, executor: str) -> dict[str, str]:
    """The labels of what an executor makes for ``spec``."""
    return {**spec.labels, LABEL_EXECUTOR: executor}


def resource_name(spec: ContainerSpec, *, limit: int = 63) -> str:
    """``conveyor-<stage>-<run id>-<6 hex>``: readable in ``docker ps``,
    unique, and a valid container or service name (letters, digits, '-';
    at most ``limit`` characters)."""
    run = re.sub(r"[^a-zA-Z0-9]", "", spec.labels.get(LABEL_RUN, ""))[:20]
    suffix = f"-{run}-{secrets.token_hex(3)}" if run else f"-{secrets.token_hex(3)}"
    stage = re.sub(r"[^a-zA-Z0-9-]", "-", spec.labels.get(LABEL_STAGE, "")).strip("-")
    return f"conveyor-{stage or 'stage'}"[: limit - len(suffix)] + suffix


def _connect() -> docker.APIClient:
    """A client of the daemon's engine (``DOCKER_HOST``...). The engine's
    API version is asked once, then reused: a client costs no request."""
    global _api_version
    with _version_lock:
        version = _api_version
    client = docker.APIClient(**kwargs_from_env(), version=version or "auto")
    if version is None:
        with _version_lock:
            _api_version = client.api_version
    return client


def connect() -> docker.APIClient:
    """:func:`_connect`, with :class:`ExecutorError` when the engine cannot
    be reached. Blocking."""
    try:
        return _connect()
    except (DockerException, requests.RequestException, OSError) as exc:
        raise ExecutorError(
            f"cannot reach the Docker engine at {engine_address()}: {explain(exc)}"
            " (is dockerd running, and may the daemon's user use it?)"
        ) from None


async def call(action: str, fn: Callable[[docker.APIClient], T], client: docker.APIClient) -> T:
    """``fn(client)`` in a worker thread bounded by the engine calls'
    limiter. Never abandoned: cancellation waits for the call (an engine
    call takes milliseconds). Errors: :class:`ExecutorError` naming
    ``action`` for SDK and HTTP errors ``fn`` lets through."""
    try:
        return await trio.to_thread.run_sync(fn, client, limiter=limiter())
    except ExecutorError:
        raise
    except STREAM_ERRORS as exc:
        raise ExecutorError(
            f"{action}: the Docker engine at {engine_address()} failed: {explain(exc)}"
        ) from None


def engine_present() -> bool:
    """Whether there may be an engine to ask: ``DOCKER_HOST`` is set or the
    default socket exists (a daemon without Docker cleans nothing up)."""
    return bool(os.environ.get("DOCKER_HOST")) or os.path.exists("/var/run/docker.sock")


def stale(found_labels: dict[str, str] | None, live_runs: Collection[str]) -> bool:
    """Whether something labelled ``found_labels`` belongs to a run that is
    not live."""
    return (found_labels or {}).get(LABEL_RUN, "") not in live_runs


def daemon_filter(daemon: str, executor: str) -> dict[str, list[str]]:
    """The engine filter for what ``executor`` made for ``daemon``."""
    return {"label": [f"{LABEL_DAEMON}={daemon}", f"{LABEL_EXECUTOR}={executor}"]}
