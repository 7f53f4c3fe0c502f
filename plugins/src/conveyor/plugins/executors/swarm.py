"""The ``swarm`` executor: each process of a stage runs as a Docker Swarm
``replicated-job`` service on the cluster the daemon's engine manages, on
whichever node satisfies the stage's ``resources`` and ``placement``.

```yaml
stages:
  test:
    executor: swarm
    image: registry.example:5000/team/tools:1
    resources: {cpus: 2, memory: 4g}          # reserved and limited
    placement: [node.labels.pool == ci]       # Swarm constraints
    run: make test
```

The job has one task (``restart_policy: none``): the stage's command as the
container's whole command line, behind an init process, as the user the
daemon resolved, with the stage's environment (Swarm templates escaped),
the workspace mounted at ``/workspace`` and no network but loopback unless
``network: host`` (services here use host networking; there is no overlay).
Images are not resolved by the daemon (the engine API never does); a node
uses the image it holds, else pulls it from its registry.

The workspace is a named volume per job (``<service name>-ws``), which the
node creates from the mount's driver options when the task lands there,
all of a run's volumes holding the same files:

- by default a ``local`` volume bound to the daemon's workspace folder
  (``type=none, o=bind``): right on a single node, where the daemon runs;
- with ``CONVEYOR_SWARM_NFS=<server>:<export>`` in the daemon's environment
  (the export that holds the daemon's ``workspaces`` folder), a ``local``
  volume of type ``nfs`` on ``<export>/<run id>`` (options from
  ``CONVEYOR_SWARM_NFS_OPTIONS``, default ``nfsvers=4.1,hard``), so every
  node sees the same files (docs/scale-out.md).

Output comes from the service's task logs (which the manager gathers from
any node), followed while the task runs and completed from the whole log
once it ends; the exit code from the task's status. A task that fails with
exit code 137 and whose container is on this node is checked for the
kernel's out-of-memory kill. A node that goes down mid-stage fails the
stage (:class:`~conveyor.plugin.ProcessKilled`, retried per ``retries``);
a task Swarm rejects (no such image on the node) raises
:class:`~conveyor.plugin.ExecutorError`.

Cancellation: the job is moved to a new iteration with no task to run,
which makes Swarm stop its task (SIGTERM, SIGKILL after the kill grace)
even on engines before Docker 24, which leave a removed job's task running
(moby/moby#44312); then the service is removed. The service is always
removed at the end, and, when the task ran on this node, its container
(engines before 24 leave it) and its volume. Every service and volume
carries the daemon's labels, which is how :meth:`SwarmExecutor.cleanup`
removes those of interrupted runs at start-up.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Final

import docker
import trio
from docker.errors import APIError, NotFound
from docker.types import (
    ContainerSpec,
    DriverConfig,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

from conveyor.plugin import (
    CONTAINER_WORKSPACE,
    Executor,
    ExecutorError,
    ProcessKilled,
    ProcessRequest,
    StageOutput,
    conveyor_line,
    hookimpl,
)
from conveyor.plugin import ContainerSpec as StageContainer
from conveyor.plugins.docker.engine import STREAM_ERRORS, ResponseCutter, explain, limiter
from conveyor.plugins.executors.common import (
    ContainerRequest,
    call,
    checked,
    connect,
    daemon_filter,
    engine_present,
    labels,
    pump_limiter,
    resource_name,
    stale,
)
from conveyor.plugins.targets.swarm import escape_template

NAME: Final = "swarm"
#: The pipeline fields the executor takes.
FIELDS: Final = frozenset({"image", "resources", "placement", "network", "user"})
#: ``<server>:<export>``: the NFS export holding the daemon's workspaces.
NFS_ENV: Final = "CONVEYOR_SWARM_NFS"
NFS_OPTIONS_ENV: Final = "CONVEYOR_SWARM_NFS_OPTIONS"
NFS_DEFAULT_OPTIONS: Final = "nfsvers=4.1,hard"
#: The label Swarm puts on a task's container: its service's id.
SERVICE_ID_LABEL: Final = "com.docker.swarm.service.id"
#: Seconds between two looks at the task.
POLL_INTERVAL: Final = 0.02
#: Seconds between two looks at the node a task runs on.
NODE_INTERVAL: Final = 1.0
#: Seconds a task may stay pending before the stage log says why.
PENDING_NOTE: Final = 2.0
#: Seconds Swarm may take beyond the kill grace to stop a cancelled task.
STOP_SLACK: Final = 15.0
#: Seconds to wait for the log stream to end once cut.
STREAM_DRAIN: Final = 5.0
NANO: Final = 1_000_000_000

_DONE: Final = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned", "remove"})
_NODE_GONE: Final = frozenset({"down", "unknown", "disconnected"})


def workspace_mount(
    spec: StageContainer, volume: str, environ: Mapping[str, str] | None = None
) -> Mount:
    """The run's workspace volume at ``/workspace``: a bind of the daemon's
    folder, or an NFS share with ``CONVEYOR_SWARM_NFS`` (see the module
    docstring)."""
    env = os.environ if environ is None else environ
    nfs = env.get(NFS_ENV, "").strip()
    if nfs:
        server, _, export = nfs.partition(":")
        if not server or not export.startswith("/"):
            raise ExecutorError(
                f"{NFS_ENV}={nfs!r}: expected <server>:<export path>, e.g."
                " 10.0.0.5:/export/conveyor/workspaces"
            )
        extra = env.get(NFS_OPTIONS_ENV, "").strip() or NFS_DEFAULT_OPTIONS
        options = {
            "type": "nfs",
            "o": f"addr={server},{extra}",
            "device": f":{export.rstrip('/')}/{spec.workspace.name}",
        }
    else:
        options = {"type": "none", "o": "bind", "device": str(spec.workspace)}
    return Mount(
        target=CONTAINER_WORKSPACE,
        source=volume,
        type="volume",
        no_copy=True,
        labels=labels(spec, NAME),
        driver_config=DriverConfig("local", options),
    )


def _nanoseconds(seconds: float) -> int:
    return max(0, math.ceil(seconds * NANO))


def service_spec(request: ProcessRequest, req: ContainerRequest, name: str) -> dict[str, Any]:
    """``create_service`` keyword arguments for the stage process: the
    service ``name``, its workspace volume ``<name>-ws``."""
    spec = req.spec
    cpus = _nanoseconds(spec.cpus) if spec.cpus is not None else None
    container = ContainerSpec(
        spec.image,
        command=list(request.argv),
        env=[f"{key}={escape_template(value)}" for key, value in request.env.items()],
        workdir=req.workdir,
        user=spec.user,
        labels=labels(spec, NAME),
        mounts=[workspace_mount(spec, f"{name}-ws")],
        init=True,
        stop_grace_period=_nanoseconds(request.kill_grace),
    )
    template = TaskTemplate(
        container,
        resources=Resources(
            cpu_limit=cpus, mem_limit=spec.memory, cpu_reservation=cpus, mem_reservation=spec.memory
        ),
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=list(spec.placement)) if spec.placement else None,
        networks=["host"] if spec.network == "host" else None,
    )
    return {
        "task_template": template,
        "name": name,
        "labels": labels(spec, NAME),
        "mode": ServiceMode("replicated-job", replicas=1, concurrency=1),
    }


def _latest_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(tasks, key=lambda t: str(t.get("CreatedAt", "")), default=None)


def _state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State", ""))


def _message(task: Mapping[str, Any]) -> str:
    status = task.get("Status") or {}
    return str(status.get("Err") or status.get("Message") or "")


def _exit_code(task: Mapping[str, Any]) -> int | None:
    status = (task.get("Status") or {}).get("ContainerStatus") or {}
    code = status.get("ExitCode")
    return int(code) if isinstance(code, int) else None


def _container_id(task: Mapping[str, Any]) -> str:
    status = (task.get("Status") or {}).get("ContainerStatus") or {}
    return str(status.get("ContainerID") or "")


def _create(client: docker.APIClient, kwargs: dict[str, Any]) -> str:
    try:
        created = client.create_service(**kwargs)  # type: ignore[no-untyped-call]
    except APIError as exc:
        hint = ""
        if "not a swarm manager" in explain(exc):
            hint = " (make it one: docker swarm init, see docs/scale-out.md)"
        raise ExecutorError(f"Swarm refused the stage's job: {explain(exc)}{hint}") from None
    return str(created["ID"])


def _tasks(client: docker.APIClient, service: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.tasks(filters={"service": service})  # type: ignore[no-untyped-call]
    return found


def _node(client: docker.APIClient, node: str) -> tuple[str, str]:
    """The node's host name and state (``ready``, ``down``...)."""
    try:
        details = client.inspect_node(node)
    except NotFound:
        return node[:12], "unknown"
    name = (details.get("Description") or {}).get("Hostname") or node[:12]
    return str(name), str((details.get("Status") or {}).get("State", ""))


def _oom_killed(client: docker.APIClient, container: str) -> bool:
    """Whether the task's container (when it is on this node) was killed
    for its memory limit."""
    if not container:
        return False
    try:
        details = client.inspect_container(container)
    except NotFound:
        return False
    return bool((details.get("State") or {}).get("OOMKilled"))


def _stop_job(client: docker.APIClient, service: str) -> bool:
    """Start an iteration of the job with nothing to run: Swarm stops the
    task of the current one (SIGTERM, SIGKILL after its grace). False when
    the service is gone."""
    try:
        details = client.inspect_service(service)  # type: ignore[no-untyped-call]
        spec = details["Spec"]
        client.update_service(
            service,
            details["Version"]["Index"],
            task_template=spec["TaskTemplate"],
            name=spec["Name"],
            labels=spec.get("Labels"),
            mode=ServiceMode("replicated-job", replicas=0, concurrency=1),
        )
    except NotFound:
        return False
    return True


def _running(tasks: list[dict[str, Any]]) -> bool:
    """Whether a task of the service may still run."""
    return any(_state(task) not in _DONE for task in tasks)


def _remove(client: docker.APIClient, service: str, volume: str = "") -> None:
    """Remove the service, then its tasks' containers and its ``volume``
    on this node."""
    with contextlib.suppress(NotFound):
        client.remove_service(service)  # type: ignore[no-untyped-call]
    for found in client.containers(all=True, filters={"label": f"{SERVICE_ID_LABEL}={service}"}):
        with contextlib.suppress(NotFound, APIError):
            client.remove_container(found["Id"], v=True, force=True)
    if volume:
        with contextlib.suppress(APIError):
            _remove_volume(client, volume)


def _remove_volume(client: docker.APIClient, name: str) -> bool:
    """Remove the volume ``name`` from this node; False while a container
    still uses it."""
    try:
        client.remove_volume(name)
    except NotFound:
        return True
    except APIError as exc:
        if exc.status_code == 409:
            return False
        raise
    return True


class _LogFollower:
    """Follows the service's logs in a worker thread, counting the payload
    bytes written, until :meth:`cut`."""

    def __init__(self, service: str, output: StageOutput) -> None:
        self.service = service
        self.output = output
        self.written = 0
        self.cutter = ResponseCutter()

    def follow(self) -> None:
        client = connect()
        try:
            self.cutter.watch(client)
            self.cutter.check()
            chunks = client.service_logs(
                self.service, follow=True, stdout=True, stderr=True, is_tty=False
            )
            with self.output.open_writer() as writer:
                for chunk in _until_broken(chunks):
                    writer.write(chunk)
                    self.written += len(chunk)
        finally:
            client.close()

    def cut(self) -> None:
        self.cutter.cut()

    def catch_up(self) -> None:
        """Write what the whole log holds beyond what was followed (the
        task ended: its log is complete). Blocking."""
        client = connect()
        try:
            chunks = client.service_logs(
                self.service, follow=False, stdout=True, stderr=True, is_tty=False
            )
            skip = self.written
            with self.output.open_writer() as writer:
                for chunk in chunks:
                    if skip >= len(chunk):
                        skip -= len(chunk)
                        continue
                    writer.write(memoryview(chunk)[skip:])
                    self.written += len(chunk) - skip
                    skip = 0
        finally:
            client.close()


def _until_broken(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks until the stream ends or breaks (it is cut)."""
    try:
        yield from chunks
    except STREAM_ERRORS:
        return


class SwarmExecutor:
    """A Swarm ``replicated-job`` service per stage process (see the module
    docstring)."""

    name: str = NAME
    container_fields: frozenset[str] = FIELDS

    async def run(self, request: ProcessRequest, output: StageOutput) -> int:
        """Run ``request.argv`` as a job; return its exit code.

        Cancellation: the job's task is stopped (SIGTERM, SIGKILL after
        ``request.kill_grace``) and the service removed, shielded, before
        ``trio.Cancelled`` propagates.
        Errors: :class:`ExecutorError` (Swarm refused the job or rejected
        its task, the engine is unreachable), :class:`ProcessKilled` (out of
        memory, the node went down), ``OSError`` from the output.
        """
        req = checked(request, NAME)
        name = resource_name(req.spec)
        kwargs = service_spec(request, req, name)
        client = await trio.to_thread.run_sync(connect, limiter=limiter())
        try:
            service = await call("creating the stage's job", lambda c: _create(c, kwargs), client)
            done = False
            try:
                code = await self._follow(client, service, req, output)
                done = True
                return code
            finally:
                with trio.CancelScope(shield=True):
                    if not done:
                        await self._stop(client, service, request.kill_grace)
                    await call(
                        "removing the stage's job",
                        lambda c: _remove(c, service, f"{name}-ws"),
                        client,
                    )
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(client.close, limiter=limiter())

    async def _follow(
        self, client: docker.APIClient, service: str, req: ContainerRequest, output: StageOutput
    ) -> int:
        """Stream the job's logs until its task ends; its exit code."""
        follower = _LogFollower(service, output)
        failed: list[OSError] = []
        waiting = trio.CancelScope()

        async def pump() -> None:
            try:
                await trio.to_thread.run_sync(follower.follow, limiter=pump_limiter())
            except OSError as exc:
                failed.append(exc)
                waiting.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            try:
                with waiting:
                    task = await self._wait_task(client, service, req, output)
            finally:
                follower.cut()
        if failed:
            raise failed[0]
        await trio.to_thread.run_sync(follower.catch_up, limiter=pump_limiter())
        return await self._outcome(client, task, req)

    async def _wait_task(
        self, client: docker.APIClient, service: str, req: ContainerRequest, output: StageOutput
    ) -> dict[str, Any]:
        """Poll the job's task until it ends; return it. Raises
        :class:`ProcessKilled` when its node goes down."""
        started = trio.current_time()
        noted = ""
        node_seen = -math.inf
        while True:
            tasks = await call("watching the stage's job", lambda c: _tasks(c, service), client)
            task = _latest_task(tasks)
            state = _state(task) if task is not None else ""
            if state in _DONE and task is not None:
                return task
            now = trio.current_time()
            if (
                task is not None
                and state in ("new", "pending", "assigned")
                and now - started > PENDING_NOTE
            ):
                message = _message(task)
                if message and message != noted:
                    noted = message
                    await _note(output, f"swarm: the stage's task is {state}: {message}")
            node_id = str(task.get("NodeID") or "") if task is not None else ""
            if node_id and now - node_seen >= NODE_INTERVAL:
                first = node_seen == -math.inf
                node_seen = now
                host, node_state = await call(
                    "looking at the task's node", functools.partial(_node, node=node_id), client
                )
                if first:
                    await _note(output, f"swarm: the stage runs on node {host}")
                if node_state in _NODE_GONE:
                    raise ProcessKilled(
                        f"the node {host} running the stage went {node_state} mid-stage",
                        error_type="node_lost",
                        system_error=True,
                    )
            await trio.sleep(POLL_INTERVAL)

    async def _outcome(
        self, client: docker.APIClient, task: Mapping[str, Any], req: ContainerRequest
    ) -> int:
        state = _state(task)
        code = _exit_code(task)
        if state == "complete":
            return 0 if code is None else code
        if state == "failed" and code is not None:
            if code != 0 and req.spec.memory is not None:
                container = _container_id(task)
                oom = await call(
                    "inspecting the task's container", lambda c: _oom_killed(c, container), client
                )
                if oom:
                    raise ProcessKilled(
                        f"killed: out of memory (limit {req.spec.memory_text})",
                        exit_code=code,
                        error_type="out_of_memory",
                    )
            return code
        message = _message(task) or "no reason given"
        if state in ("rejected", "failed"):
            raise ExecutorError(f"Swarm could not run the stage's task ({state}): {message}")
        raise ProcessKilled(
            f"Swarm ended the stage's task ({state}): {message}",
            error_type="task_lost",
            system_error=True,
        )

    async def _stop(self, client: docker.APIClient, service: str, grace: float) -> None:
        """Make Swarm stop the job's task and wait until nothing of it runs
        (at most ``grace`` plus :data:`STOP_SLACK` seconds)."""
        if not await call("stopping the stage's job", lambda c: _stop_job(c, service), client):
            return
        with trio.move_on_after(grace + STOP_SLACK):
            while True:
                tasks = await call("watching the job stop", lambda c: _tasks(c, service), client)
                if not _running(tasks):
                    return
                await trio.sleep(POLL_INTERVAL * 5)

    async def cleanup(self, daemon: str, live_runs: Collection[str]) -> int:
        """Remove the jobs (their tasks stopped first), this node's task
        containers and workspace volumes this executor made for ``daemon``
        whose run is not in ``live_runs``; return how many jobs and volumes.
        Nothing without an engine, or on an engine that is not a Swarm
        manager."""
        if not engine_present():
            return 0

        def run(client: docker.APIClient) -> int:
            swarm = client.info().get("Swarm") or {}
            if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
                return 0
            removed = 0
            wanted = daemon_filter(daemon, NAME)
            for service in client.services(filters=wanted):  # type: ignore[no-untyped-call]
                if stale((service.get("Spec") or {}).get("Labels"), live_runs):
                    _stop_job(client, service["ID"])
                    _remove(client, service["ID"])
                    removed += 1
            for found in client.containers(all=True, filters=wanted):
                if stale(found.get("Labels"), live_runs):
                    with contextlib.suppress(NotFound, APIError):
                        client.remove_container(found["Id"], v=True, force=True)
            for volume in client.volumes(filters=wanted).get("Volumes") or []:
                if stale(volume.get("Labels"), live_runs):
                    with contextlib.suppress(APIError):
                        removed += _remove_volume(client, volume["Name"])
            return removed

        client = await trio.to_thread.run_sync(connect, limiter=limiter())
        try:
            return await call("removing jobs of interrupted runs", run, client)
        finally:
            await trio.to_thread.run_sync(client.close, limiter=limiter())


async def _note(output: StageOutput, text: str) -> None:
    """A line from Conveyor itself in the stage log."""
    await output.write(conveyor_line(text, at_line_start=output.at_line_start))


@hookimpl
def conveyor_executors() -> list[Executor]:
    return [SwarmExecutor()]
