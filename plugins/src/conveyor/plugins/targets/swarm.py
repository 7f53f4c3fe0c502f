"""The ``swarm`` deploy target: a Docker Swarm service per environment,
which Swarm itself rolls from one version to the next.

```yaml
environments:
  production:
    target: swarm
    replicas: 2
    port: 9080                 # the front port users reach
    health: {path: /health}
    with:
      init: true               # default: an init process as PID 1
      constraints: [node.role == manager]   # Swarm placement constraints
```

The service runs the artifact's image by digest (never resolved: the
engine API never resolves an image, and a pinned reference is never
pulled when the node has it), with host networking, one port per replica:
slot ``n`` listens on ``ports[n - 1]``, given as
``PORT=<ports[0] // 10>{{.Task.Slot}}`` (a Swarm template, so at most 9
replicas), the configuration as the tasks' environment (a ``{{`` in a value
is escaped, so it reaches the task as written) and the daemon's labels on
the service and its containers.

Each update is Swarm's rolling update: ``parallelism: 1``, ``order:
stop-first`` (start-first cannot work with one port per replica: the new
task would find its port taken), ``failure_action: rollback``, with the
environment's watch window as Swarm's ``monitor`` period, and the same
settings (pausing on failure) for Swarm's own rollbacks. The service spec
is always given whole (never merged with the current one, whose settings a
new deployment must not inherit).

Swarm's own view of an update is not trusted (measured: a rollback can be
reported complete while a replica is still down). :meth:`SwarmTarget.update`
waits for the tasks themselves: it returns once every slot runs a task of
the new deployment and nothing else runs, and fails as soon as a task of
the new deployment fails or is rejected, or the service's spec is no longer
the one it gave (Swarm rolled it back). The daemon then health-checks every
replica itself, watches them, and rolls back with another ``update``, to
the previous deployment. Swarm's ``failure_action: rollback`` remains the
safety net while no daemon watches (one killed mid-update).

Swarm set-up on these machines: ``scripts/services.sh swarm`` (see
docs/operations.md): a single-node swarm on 127.0.0.1 without the
``ingress`` overlay and the ``docker_gwbridge`` bridge (the routing mesh
cannot work without IPVS and iptables; nothing here needs it).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import docker
import trio
from docker.errors import NotFound
from docker.types import (
    ContainerSpec,
    Placement,
    RestartPolicy,
    RollbackConfig,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)
from pydantic import Field

from conveyor.plugin import (
    LABEL_DEPLOYMENT,
    LABEL_ENVIRONMENT,
    LABEL_OWNER,
    LABEL_PORT,
    OCI_IMAGE,
    SERVICE_ROLLOUT,
    DeployTarget,
    Environment,
    Parameters,
    Replica,
    ServiceRequest,
    TargetContext,
    TargetError,
    hookimpl,
)
from conveyor.plugins.targets.docker import State, engine_time
from conveyor.plugins.targets.engine import call, container_tail, local_image, option_problems

NAME: Final = "swarm"
#: A Swarm template can only append the slot to a prefix: 9 slots at most.
MAX_REPLICAS: Final = 9
#: Seconds between two looks at the tasks while an update runs.
POLL_INTERVAL: Final = 0.1
#: Seconds an update may take per replica on top of the readiness timeout
#: and the stop grace (Swarm waits about 3 s after each task stop).
UPDATE_SLACK: Final = 15.0
#: Seconds before Swarm restarts a task that exited (on failure only).
RESTART_DELAY: Final = 1.0
NANO: Final = 1_000_000_000

_TASK_STATES: Final[dict[str, State]] = {
    "running": "running",
    "new": "starting",
    "pending": "starting",
    "assigned": "starting",
    "accepted": "starting",
    "preparing": "starting",
    "ready": "starting",
    "starting": "starting",
    "complete": "stopped",
    "shutdown": "stopped",
}
_FAILED_STATES: Final = frozenset({"failed", "rejected", "orphaned", "remove"})


class SwarmOptions(Parameters):
    """The ``with:`` options of an environment on the ``swarm`` target."""

    init: bool = True
    constraints: list[str] = Field(default_factory=list, max_length=20)


def service_name(owner: str, environment: str) -> str:
    """``conveyor-<environment>-<8 hex of the owner>``: one service per
    environment and daemon."""
    safe = re.sub(r"[^a-zA-Z0-9-]", "-", environment)[:40].strip("-") or "env"
    return f"conveyor-{safe}-{hashlib.sha256(owner.encode()).hexdigest()[:8]}"


def port_template(ports: Sequence[int]) -> str:
    """``PORT=<ports[0] // 10>{{.Task.Slot}}``, after checking that it gives
    slot n ``ports[n - 1]``; raises :class:`TargetError` otherwise."""
    if not ports or len(ports) > MAX_REPLICAS:
        raise TargetError(
            f"the swarm target runs 1 to {MAX_REPLICAS} replicas (one port per replica,"
            f" named by a Swarm template), not {len(ports)}"
        )
    prefix = ports[0] // 10
    if list(ports) != [prefix * 10 + slot for slot in range(1, len(ports) + 1)]:
        raise TargetError(f"ports {list(ports)} are not <prefix>1, <prefix>2, ... for Swarm slots")
    return f"PORT={prefix}{{{{.Task.Slot}}}}"


def escape_template(value: str) -> str:
    """A value Swarm's templating passes through unchanged (``{{`` written
    as a template action printing ``{{``)."""
    return value.replace("{{", '{{"{{"}}')


def _nanoseconds(seconds: float) -> int:
    return max(0, math.ceil(seconds * NANO))


def service_spec(environment: Environment, request: ServiceRequest, image: str) -> dict[str, Any]:
    """The whole service spec for ``request``, as ``create_service`` and
    ``update_service`` keyword arguments."""
    options = SwarmOptions.model_validate(dict(environment.options))
    env = [f"{key}={escape_template(value)}" for key, value in request.env.items()]
    env.append(port_template(request.ports))
    labels = dict(request.labels)
    container = ContainerSpec(
        image,
        args=list(environment.command) or None,
        env=env,
        labels=labels,
        init=options.init,
        stop_grace_period=_nanoseconds(environment.stop_grace),
    )
    template = TaskTemplate(
        container,
        networks=["host"],
        restart_policy=RestartPolicy(
            condition="on-failure", delay=_nanoseconds(RESTART_DELAY), max_attempts=0
        ),
        placement=Placement(constraints=list(options.constraints)) if options.constraints else None,
    )
    monitor = _nanoseconds(max(1.0, environment.watch_window))
    return {
        "task_template": template,
        "labels": labels,
        "mode": ServiceMode("replicated", replicas=environment.replicas),
        "update_config": UpdateConfig(
            parallelism=1,
            delay=0,
            failure_action="rollback",
            monitor=monitor,
            max_failure_ratio=0,
            order="stop-first",
        ),
        "rollback_config": RollbackConfig(
            parallelism=1,
            delay=0,
            failure_action="pause",
            monitor=monitor,
            max_failure_ratio=0,
            order="stop-first",
        ),
    }


def _find_service(client: docker.APIClient, owner: str, environment: str) -> dict[str, Any] | None:
    """The environment's service of this daemon, or None."""
    filters = {"label": [f"{LABEL_ENVIRONMENT}={environment}", f"{LABEL_OWNER}={owner}"]}
    services: list[dict[str, Any]] = client.services(filters=filters)  # type: ignore[no-untyped-call]
    if not services:
        return None
    return max(services, key=lambda s: s.get("CreatedAt", ""))


def _container_labels(task_spec: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((task_spec or {}).get("ContainerSpec") or {}).get("Labels") or {})


def _service_deployment(service: Mapping[str, Any]) -> str:
    """The deployment whose spec the service has now."""
    spec = service.get("Spec") or {}
    return _container_labels(spec.get("TaskTemplate")).get(LABEL_DEPLOYMENT, "")


def _task_deployment(task: Mapping[str, Any]) -> str:
    """The deployment a task was started for."""
    return _container_labels(task.get("Spec")).get(LABEL_DEPLOYMENT, "")


def _task_state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State", ""))


def _task_port(task: Mapping[str, Any]) -> int:
    """The port a task listens on: its ``PORT`` template with its slot."""
    env = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Env") or []
    slot = str(task.get("Slot", ""))
    for item in env:
        if item.startswith("PORT="):
            text = item.removeprefix("PORT=").replace("{{.Task.Slot}}", slot)
            return int(text) if text.isdigit() else 0
    return 0


def _task_replica(task: Mapping[str, Any]) -> Replica:
    status = task.get("Status") or {}
    name = _task_state(task)
    state: State = "failed" if name in _FAILED_STATES else _TASK_STATES.get(name, "starting")
    port = _task_port(task)
    labels = _container_labels(task.get("Spec"))
    labels[LABEL_PORT] = str(port)
    message = "" if state == "running" else str(status.get("Err") or status.get("Message") or "")
    return Replica(
        id=str(task["ID"]),
        port=port,
        labels=labels,
        started_at=engine_time(str(task.get("CreatedAt", ""))),
        state=state,
        slot=int(task.get("Slot") or 0),
        message=message,
    )


def _current_tasks(tasks: Iterable[Mapping[str, Any]], slots: int) -> dict[int, Mapping[str, Any]]:
    """Per slot from 1 to ``slots``, the task Swarm means to run there
    (desired ``running`` or ``ready``), else the newest one."""
    by_slot: dict[int, list[Mapping[str, Any]]] = {}
    for task in tasks:
        slot = int(task.get("Slot") or 0)
        if 1 <= slot <= slots:
            by_slot.setdefault(slot, []).append(task)
    current: dict[int, Mapping[str, Any]] = {}
    for slot, candidates in by_slot.items():
        candidates.sort(key=lambda t: engine_time(str(t.get("CreatedAt", ""))))
        wanted = [t for t in candidates if t.get("DesiredState") in ("running", "ready")]
        current[slot] = (wanted or candidates)[-1]
    return current


def _slots(service: Mapping[str, Any]) -> int:
    mode = (service.get("Spec") or {}).get("Mode") or {}
    return int((mode.get("Replicated") or {}).get("Replicas") or 0)


def _service_tasks(client: docker.APIClient, service: Mapping[str, Any]) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = client.tasks(filters={"service": service["ID"]})  # type: ignore[no-untyped-call]
    return tasks


def _container_output(client: docker.APIClient, task: Mapping[str, Any]) -> str:
    """What the task's container wrote last, when it is on this node."""
    status = task.get("Status") or {}
    container = (status.get("ContainerStatus") or {}).get("ContainerID")
    return container_tail(client, str(container)) if container else ""


class SwarmTarget:
    """A Docker Swarm service per environment (see the module docstring)."""

    name: str = NAME
    description: str = (
        "a Docker Swarm service per environment, rolled by Swarm (stop-first), host networking"
    )
    rollout: str = SERVICE_ROLLOUT
    artifact_kinds: tuple[str, ...] = (OCI_IMAGE,)

    def validate(self, options: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
        return option_problems(options, SwarmOptions, NAME)

    async def check(self, ctx: TargetContext, environment: Environment) -> None:
        """The engine is a Swarm manager and holds the artifact's image;
        raises :class:`TargetError` otherwise, before anything is touched."""

        def run(client: docker.APIClient) -> None:
            swarm = client.info().get("Swarm") or {}
            if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
                raise TargetError(
                    "the Docker engine is not a Swarm manager (swarm state"
                    f" {swarm.get('LocalNodeState') or 'unknown'}): make it one with"
                    " `docker swarm init --advertise-addr 127.0.0.1` (scripts/services.sh swarm)"
                )
            if environment.replicas > MAX_REPLICAS:
                raise TargetError(
                    f"the swarm target runs at most {MAX_REPLICAS} replicas, not"
                    f" {environment.replicas}"
                )
            local_image(client, environment.artifact)

        await call("checking the swarm", run)

    async def update(self, ctx: TargetContext, request: ServiceRequest) -> list[Replica]:
        """Create or update the environment's service to ``request``, then
        wait until every slot runs a task of ``request.deployment_id`` and
        nothing else runs; return the replicas then.

        An update to the deployment the service already runs (the same
        ``deployment_id``, after a daemon restart) changes nothing and only
        waits.

        Errors: :class:`TargetError` when the engine refuses the spec, a new
        task fails or is rejected (its error), Swarm rolled the update back,
        or it takes longer than the readiness timeout plus the stop grace
        plus 15 s per replica.
        Cancellation: the service is left as it is (mid-update); a later
        ``update`` takes over from there.
        """
        environment = request.environment
        name = service_name(ctx.owner, environment.name)
        port_template(request.ports)  # fail before touching anything

        def start(client: docker.APIClient) -> tuple[str, str]:
            image = local_image(client, environment.artifact)
            spec = service_spec(environment, request, image)
            service = _find_service(client, ctx.owner, environment.name)
            if service is None:
                created = client.create_service(name=name, **spec)  # type: ignore[no-untyped-call]
                return str(created["ID"]), "created"
            if _service_deployment(service) == request.deployment_id:
                return str(service["ID"]), "unchanged"
            client.update_service(
                service["ID"],
                service["Version"]["Index"],
                name=service["Spec"]["Name"],
                **spec,
            )
            return str(service["ID"]), "updated"

        per_replica = environment.readiness_timeout + environment.stop_grace + UPDATE_SLACK
        limit = per_replica * max(1, environment.replicas)
        await self._rollback_settled(ctx, environment.name, limit)
        service_id, what = await call(f"updating the {environment.name} service", start)
        await ctx.log(f"swarm service {name} {what} for deployment {request.deployment_id}")
        with trio.move_on_after(limit) as waited:
            replicas = await self._wait_rolled(request, service_id)
        if waited.cancelled_caught:
            raise TargetError(
                f"the swarm update of {environment.name} did not finish in {limit:.0f} s"
            )
        return replicas

    async def _rollback_settled(self, ctx: TargetContext, environment: str, limit: float) -> None:
        """Wait (up to ``limit`` seconds) while Swarm rolls the service back on
        its own (``failure_action: rollback`` after a failed update): an
        update given meanwhile races the rollback's tasks for the replicas'
        ports ("bind: Address already in use")."""

        def state(client: docker.APIClient) -> str:
            service = _find_service(client, ctx.owner, environment)
            status = (service or {}).get("UpdateStatus") or {}
            return str(status.get("State") or "")

        with trio.move_on_after(limit):
            while True:  # the engine has no event for it: polled
                if await call("reading the swarm service", state) != "rollback_started":
                    return
                await trio.sleep(POLL_INTERVAL)

    async def _wait_rolled(self, request: ServiceRequest, service_id: str) -> list[Replica]:
        """Poll the service and its tasks until the update is done (see
        :meth:`update`)."""
        wanted = request.deployment_id
        count = request.environment.replicas

        def look(client: docker.APIClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            try:
                service: dict[str, Any] = client.inspect_service(service_id)  # type: ignore[no-untyped-call]
            except NotFound:
                raise TargetError(f"the swarm service {service_id} was removed") from None
            return service, _service_tasks(client, service)

        while True:
            service, tasks = await call("watching the swarm update", look)
            for task in tasks:
                if _task_deployment(task) == wanted and _task_state(task) in _FAILED_STATES:
                    replica = _task_replica(task)
                    output = await self._task_output(task)
                    raise TargetError(
                        f"replica {replica.slot} (task {replica.id[:12]}, port {replica.port})"
                        f" {_task_state(task)}: {replica.message or 'no error given'}"
                        + (f"; its last output: {output[-500:]}" if output else "")
                    )
            if _service_deployment(service) != wanted:
                status = service.get("UpdateStatus") or {}
                raise TargetError(
                    "the service no longer runs this deployment's spec: Swarm rolled it back"
                    f" ({status.get('Message') or status.get('State') or 'no update status'})"
                )
            current = _current_tasks(tasks, count)
            done = all(
                slot in current
                and _task_deployment(current[slot]) == wanted
                and current[slot].get("DesiredState") == "running"
                and _task_state(current[slot]) == "running"
                for slot in range(1, count + 1)
            )
            others_running = any(
                _task_state(t) == "running" and _task_deployment(t) != wanted for t in tasks
            )
            if done and not others_running:
                return [_task_replica(current[slot]) for slot in range(1, count + 1)]
            await trio.sleep(POLL_INTERVAL)

    async def output_tail(self, ctx: TargetContext, replica: Replica) -> str:
        """The last lines the task's container wrote, when it is on this
        node; else the task's error."""

        def run(client: docker.APIClient) -> str:
            try:
                task = client.inspect_task(replica.id)  # type: ignore[no-untyped-call]
            except NotFound:
                return ""
            status = task.get("Status") or {}
            return _container_output(client, task) or str(status.get("Err") or "")

        return await call(f"reading the logs of task {replica.id[:12]}", run)

    async def _task_output(self, task: Mapping[str, Any]) -> str:
        return await call(
            "reading a failed task's logs", lambda client: _container_output(client, task)
        )

    async def replicas(self, ctx: TargetContext, environment: str) -> list[Replica]:
        """One replica per slot of the environment's service: the task Swarm
        means to run there (or the last one), with its state and port; []
        without a service."""

        def run(client: docker.APIClient) -> list[Replica]:
            service = _find_service(client, ctx.owner, environment)
            if service is None:
                return []
            current = _current_tasks(_service_tasks(client, service), _slots(service))
            return [_task_replica(current[slot]) for slot in sorted(current)]

        return await call(f"listing the {environment} service's tasks", run)

    async def remove(self, ctx: TargetContext, environment: str) -> int:
        """Remove the environment's service (``StopEnvironment``) and wait,
        up to the stop grace period and 30 seconds, until its containers
        on this engine are gone; the number of replicas it ran (0 without
        a service)."""

        def run(client: docker.APIClient) -> tuple[str, int]:
            service = _find_service(client, ctx.owner, environment)
            if service is None:
                return "", 0
            current = _current_tasks(_service_tasks(client, service), _slots(service))
            running = sum(1 for task in current.values() if _task_state(task) == "running")
            client.remove_service(service["ID"])  # type: ignore[no-untyped-call]
            return str(service["ID"]), running

        service_id, running = await call(f"removing the {environment} service", run)
        if not service_id:
            return 0
        label = {"label": [f"com.docker.swarm.service.id={service_id}"]}

        def left(client: docker.APIClient) -> bool:
            return bool(client.containers(filters=label))

        with trio.move_on_after(ctx.stop_grace + 30):
            while True:
                if not await call(f"waiting for the {environment} service to stop", left):
                    break
                await trio.sleep(0.2)
        return running


@hookimpl
def conveyor_deploy_targets() -> list[DeployTarget]:
    return [SwarmTarget()]
