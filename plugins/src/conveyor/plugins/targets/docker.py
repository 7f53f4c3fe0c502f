"""The ``docker`` deploy target: one container per replica on the local
Docker engine, rolled one replica at a time by the daemon.

```yaml
environments:
  staging:
    target: docker
    replicas: 2
    port: 8080                 # the front port users reach
    health: {path: /health}
    config: {GREETING: hello}
    with:
      init: true               # default: an init process as PID 1
      stop_signal: SIGTERM     # default: the image's own (STOPSIGNAL)
```

Each replica is a container of the artifact's image (by digest: see
:func:`~conveyor.plugins.targets.engine.image_reference`; never pulled)
with host networking, listening on 127.0.0.1 at the port the daemon gives
it (``PORT``), the environment's configuration as its environment, and the
daemon's labels (environment, deployment, digest, port, owner) — which is
how :meth:`DockerTarget.list_replicas` finds what runs after a restart.
The daemon's rolling algorithm does the rest (start the new replica on a
fresh port, gate on health, switch the front proxy, drain, stop the old).

Containers run with an init process as PID 1 (``docker run --init``)
unless ``with: {init: false}``: a server that is PID 1 of its container
(busybox ``httpd`` is one) would otherwise ignore the stop signal and be
killed only after the whole grace period. They have no restart policy: the
daemon supervises them (a replica that exits is seen by ``alive``).
Stopping is the engine's stop (the stop signal, then SIGKILL after the
grace) and the removal of the container.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final, Literal

import docker
import trio
from docker.errors import NotFound
from pydantic import field_validator

from conveyor.plugin import (
    LABEL_ENVIRONMENT,
    LABEL_OWNER,
    LABEL_PORT,
    OCI_IMAGE,
    REPLICA_ROLLOUT,
    DeployTarget,
    Environment,
    Parameters,
    Replica,
    ReplicaRequest,
    TargetContext,
    hookimpl,
)
from conveyor.plugins.targets.engine import call, container_tail, local_image, option_problems

NAME: Final = "docker"
#: Signal names ``stop_signal`` accepts.
SIGNAL_RE: Final = re.compile(r"^(SIG[A-Z0-9]+|[0-9]{1,2})$")
#: The engine's time stamps: RFC 3339 with nanoseconds.
TIMESTAMP_RE: Final = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?")

State = Literal["running", "starting", "stopped", "failed"]


class DockerOptions(Parameters):
    """The ``with:`` options of an environment on the ``docker`` target."""

    init: bool = True
    stop_signal: str | None = None

    @field_validator("stop_signal")
    @classmethod
    def _signal(cls, value: str | None) -> str | None:
        if value is not None and not SIGNAL_RE.match(value):
            raise ValueError(f"expected a signal name (SIGTERM, SIGQUIT) or number, got {value!r}")
        return value


def container_name(environment: str, port: int) -> str:
    """``conveyor-<environment>-<port>-<6 hex>``: readable in ``docker ps``,
    never clashing with a container left behind."""
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", environment)[:40]
    return f"conveyor-{safe}-{port}-{secrets.token_hex(3)}"


def _state(details: Mapping[str, Any]) -> tuple[State, str]:
    """A container's state (from ``inspect_container``) as a replica state and
    a message."""
    state = details.get("State") or {}
    status = state.get("Status", "")
    if status == "running" and not state.get("Restarting"):
        return "running", ""
    if status in ("created", "restarting"):
        return "starting", status
    code = state.get("ExitCode", 0)
    error = state.get("Error") or ""
    if state.get("OOMKilled"):
        return "failed", "killed: out of memory"
    if status == "exited" and code == 0 and not error:
        return "stopped", "exit code 0"
    return "failed", error or f"{status or 'gone'}, exit code {code}"


def engine_time(text: str) -> float:
    """Unix seconds of an engine time stamp (``2024-05-01T10:20:30.123456789Z``,
    always UTC); 0.0 when there is none."""
    match = TIMESTAMP_RE.match(text or "")
    if match is None:
        return 0.0
    seconds = datetime.fromisoformat(match[1] + "+00:00").timestamp()
    return max(0.0, seconds + float(match[2] or 0))


def _started_at(details: Mapping[str, Any]) -> float:
    started = (details.get("State") or {}).get("StartedAt")
    return engine_time(started or details.get("Created") or "")


def _replica(details: Mapping[str, Any]) -> Replica:
    labels = dict((details.get("Config") or {}).get("Labels") or {})
    state, message = _state(details)
    try:
        port = int(labels.get(LABEL_PORT, "0"))
    except ValueError:
        port = 0
    return Replica(
        id=str(details["Id"]),
        port=port,
        labels=labels,
        started_at=_started_at(details),
        state=state,
        message=message,
    )


class DockerTarget:
    """Containers on the local Docker engine, one per replica (see the
    module docstring)."""

    name: str = NAME
    description: str = "containers on the local Docker engine, one per replica, host networking"
    rollout: str = REPLICA_ROLLOUT
    artifact_kinds: tuple[str, ...] = (OCI_IMAGE,)

    def validate(self, options: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
        return option_problems(options, DockerOptions, NAME)

    async def check(self, ctx: TargetContext, environment: Environment) -> None:
        """The engine answers and holds the artifact's image; raises
        :class:`TargetError` otherwise, before anything is touched."""
        await call("checking the image", lambda client: local_image(client, environment.artifact))

    async def start(self, ctx: TargetContext, request: ReplicaRequest) -> Replica:
        """Create and start the replica's container, labelled from creation;
        returns once the engine started it.

        Cancellation: the engine call is finished, then a container it
        created is removed before ``trio.Cancelled`` propagates.
        Errors: :class:`TargetError` (no such image, the engine failed to
        start the container: its message).
        """
        environment = request.environment
        options = DockerOptions.model_validate(dict(environment.options))
        labels = {**request.labels, LABEL_PORT: str(request.port)}
        name = container_name(environment.name, request.port)
        created: list[str] = []

        def run(client: docker.APIClient) -> dict[str, Any]:
            image = local_image(client, environment.artifact)
            host_config = client.create_host_config(network_mode="host", init=options.init)
            container = client.create_container(
                image,
                command=list(environment.command) or None,
                environment=dict(request.env),
                labels=labels,
                name=name,
                host_config=host_config,
                stop_signal=options.stop_signal,
                stop_timeout=max(0, math.ceil(environment.stop_grace)),
            )
            created.append(container["Id"])
            try:
                client.start(container["Id"])
            except Exception:
                _remove(client, container["Id"])
                created.clear()
                raise
            details: dict[str, Any] = client.inspect_container(container["Id"])
            return details

        try:
            action = f"starting a {environment.name} replica on port {request.port}"
            details = await call(action, run)
            replica = _replica(details)
            await ctx.log(f"started container {name} ({replica.id[:12]}) on port {request.port}")
            return replica
        except BaseException:
            if created:
                with trio.CancelScope(shield=True):
                    await call("removing a replica", lambda client: _remove(client, created[0]))
            raise

    async def stop(self, ctx: TargetContext, replica: Replica, grace: float) -> None:
        """The engine's stop (the stop signal, SIGKILL after ``grace``
        seconds), then the container's removal. A container already gone is
        not an error."""

        def run(client: docker.APIClient) -> None:
            try:
                client.stop(replica.id, timeout=max(0, math.ceil(grace)))
            except NotFound:
                return
            _remove(client, replica.id)

        await call(f"stopping container {replica.id[:12]}", run)

    async def alive(self, ctx: TargetContext, replica: Replica) -> bool:
        def run(client: docker.APIClient) -> bool:
            try:
                details = client.inspect_container(replica.id)
            except NotFound:
                return False
            return _state(details)[0] == "running"

        return await call(f"inspecting container {replica.id[:12]}", run)

    async def output_tail(self, ctx: TargetContext, replica: Replica) -> str:
        """The last lines the replica's container wrote ("" once removed)."""
        return await call(
            f"reading the logs of container {replica.id[:12]}",
            lambda client: container_tail(client, replica.id),
        )

    async def list_replicas(self, ctx: TargetContext, environment: str) -> list[Replica]:
        """Every container, running or not, labelled for ``environment`` and
        this daemon, oldest first."""
        filters = {"label": [f"{LABEL_ENVIRONMENT}={environment}", f"{LABEL_OWNER}={ctx.owner}"]}

        def run(client: docker.APIClient) -> list[Replica]:
            found: list[Replica] = []
            for summary in client.containers(all=True, filters=filters):
                try:
                    details = client.inspect_container(summary["Id"])
                except NotFound:  # removed in between
                    continue
                found.append(_replica(details))
            return sorted(found, key=lambda r: (r.started_at, r.id))

        return await call(f"listing the {environment} containers", run)


def _remove(client: docker.APIClient, container: str) -> None:
    with contextlib.suppress(NotFound):
        client.remove_container(container, force=True)


@hookimpl
def conveyor_deploy_targets() -> list[DeployTarget]:
    return [DockerTarget()]
