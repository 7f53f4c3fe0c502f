"""The deploy target contract: what a deploy target plugin implements and
what it is given (``conveyor_deploy_targets``).

A **deploy target** runs an environment's artifact somewhere: local
processes (``process``), containers on a Docker engine (``docker``), a
Docker Swarm service (``swarm``). The daemon owns everything else of a
deployment: which artifact, its configuration, health checks, readiness
gating, the watch window, traffic switching, rollback, the audit trail.
A target comes in one of two shapes, named by its :attr:`DeployTarget.rollout`:

``rollout = "replica"`` (:class:`ReplicaTarget`; ``process``, ``docker``)
    The target implements four small primitives on single replicas: start a
    replica of an artifact with a configuration on a port, stop one with a
    grace period, tell whether one is alive, list the replicas it runs for
    an environment. The daemon's shared rolling algorithm does the rest, one
    replica at a time: start the new replica on a fresh port, wait until it
    passes the environment's health check (within the readiness timeout),
    add it to the environment's front proxy, take an old replica out of the
    proxy, let its connections drain, stop it. Users reach the environment
    on its stable front port (``port:``), served by a small proxy process
    that outlives daemon restarts, so the old version keeps serving while
    the new one starts, and every request finds a healthy replica.

``rollout = "service"`` (:class:`ServiceTarget`; ``swarm``)
    The target performs the whole update of a service itself (create it, or
    update it to the new artifact and configuration) and reports the state
    of each replica. The daemon still decides success from its own health
    checks of every reported replica and through the watch window; to roll
    back it asks the target for another update, to the previous version.
    The front proxy forwards to the replicas the target reports.

Rules for every method of a target:

* **Never block the trio loop.** Blocking calls (the Docker SDK, file
  I/O) go through ``trio.to_thread.run_sync`` (with a
  ``trio.CapacityLimiter`` of the target's own); processes through trio.
* **Cancellation.** Any call may be cancelled (``trio.Cancelled``): the
  readiness timeout passed, the deployment was aborted, the daemon is
  shutting down. Let it propagate; clean up in ``finally``. A ``start``
  that is cancelled must not leave an unlabelled replica running: whatever
  it started either carries its labels already (so :meth:`ReplicaTarget.list_replicas`
  finds it and the daemon stops it) or is stopped before re-raising. The
  daemon calls ``stop`` in a shielded scope with a deadline of the grace
  period plus 5 seconds, so a stop is not cut short by the cancellation of
  the deployment around it.
* **Replicas outlive the daemon.** A daemon that stops (SIGTERM) or dies
  (SIGKILL) leaves replicas serving: start them outside the daemon's
  process group and without pipes to the daemon (a replica's output goes
  to a file or the engine's log). After a restart the daemon finds them
  again through ``list_replicas`` (labels) and reconciles.
* **Errors.** Raise :class:`TargetError` with a message a user can act on
  for an expected failure (no such image, the engine is unreachable, the
  port is taken); the deployment fails with that message. Any other
  exception fails the deployment too, with the target's plugin name and the
  exception in its log; it never takes the daemon down.
* **Loopback only.** Replicas listen on ``127.0.0.1`` at the port they are
  given (``PORT`` in their environment).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from conveyor.daemon.artifacts.model import Artifact

#: :attr:`DeployTarget.rollout` of a target whose replicas the daemon rolls
#: one at a time (:class:`ReplicaTarget`).
REPLICA_ROLLOUT: Final = "replica"
#: :attr:`DeployTarget.rollout` of a target that updates a whole service
#: itself (:class:`ServiceTarget`).
SERVICE_ROLLOUT: Final = "service"

#: Labels the daemon asks a target to put on every replica (container,
#: service, process record) it starts, and that ``list_replicas`` returns: the
#: environment's name, the deployment that started it, the artifact digest
#: it runs, its port, and the daemon it belongs to (:attr:`TargetContext.owner`:
#: two daemons sharing an engine never touch each other's replicas).
LABEL_ENVIRONMENT: Final = "dev.conveyor.environment"
LABEL_DEPLOYMENT: Final = "dev.conveyor.deployment"
LABEL_DIGEST: Final = "dev.conveyor.digest"
LABEL_PORT: Final = "dev.conveyor.port"
LABEL_OWNER: Final = "dev.conveyor.owner"


class TargetError(Exception):
    """An expected failure of a target (the engine is unreachable, no such
    image, the port is taken): the deployment fails with this message,
    which should say what to do about it."""


@dataclass(frozen=True)
class HealthCheck:
    """How the daemon checks one replica (see :meth:`TargetContext.probe`).

    Exactly one of ``path`` and ``command`` is set. ``path``: an HTTP GET of
    ``http://127.0.0.1:<replica port><path>``, healthy on a 2xx answer.
    ``command``: a process on the daemon's machine with ``PORT`` (and the
    environment's configuration) in its environment, healthy on exit code 0.
    """

    path: str = ""
    command: tuple[str, ...] = ()
    #: Seconds one probe may take before it counts as failed.
    timeout: float = 1.0
    #: Seconds between probes while waiting for readiness and while watching.
    interval: float = 0.2
    #: Consecutive unhealthy answers that make a replica unhealthy (while
    #: starting, "connection refused" does not count: it is still starting).
    failure_threshold: int = 2


@dataclass(frozen=True)
class ProbeResult:
    """One health probe of one replica."""

    healthy: bool
    #: What was seen: ``HTTP 200``, ``HTTP 503``, ``connection refused``,
    #: ``exit code 1``, ``timed out after 1s``.
    detail: str


@dataclass(frozen=True)
class Environment:
    """An environment as a target sees it, for one deployment: what to run,
    how many, with which configuration, checked how.

    The same :class:`Artifact` (the same digest) moves from environment to
    environment; what differs is this: the configuration, the replicas, the
    port, the target's options.
    """

    #: The environment's name (``staging``).
    name: str
    #: The target's name (``process``, ``docker``, ``swarm``).
    target: str
    #: How many replicas should run (at least 1).
    replicas: int
    #: The artifact to run, by digest (a ``file`` in the daemon's store for
    #: ``process``; an ``oci-image`` for ``docker`` and ``swarm``).
    artifact: Artifact
    #: The service command (``run:``), ``{artifact}`` already replaced by the
    #: artifact's path in the daemon's content-addressed store for a file
    #: artifact. Empty: the artifact's own (an image's entrypoint and CMD).
    command: tuple[str, ...]
    #: The externalised configuration, as environment variables: the
    #: environment's ``config:``, its ``env_file`` (read from the repository
    #: at the artifact's commit) and secrets by reference. Secret values are
    #: here and nowhere else: never log them.
    config: Mapping[str, str]
    #: ``sha256:`` of the configuration (names and values), to tell whether it
    #: changed between two deployments without holding the values.
    config_hash: str
    #: The stable front port users reach (the proxy's, on 127.0.0.1).
    port: int
    health: HealthCheck
    #: Seconds a new replica has to pass its health check.
    readiness_timeout: float
    #: Seconds every replica must stay healthy after the rollout before the
    #: deployment counts as healthy.
    watch_window: float
    #: Seconds between SIGTERM (or the engine's stop) and SIGKILL.
    stop_grace: float
    #: The target's own options (``with:`` of the environment), as validated
    #: by :meth:`DeployTarget.validate`.
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaRequest:
    """One replica for :meth:`ReplicaTarget.start` to start."""

    environment: Environment
    #: The deployment the replica belongs to.
    deployment_id: str
    #: The port it must listen on, on 127.0.0.1 (also ``PORT`` in ``env``).
    port: int
    #: The replica's own environment variables: the environment's
    #: configuration plus ``PORT``, ``CONVEYOR_ENVIRONMENT``,
    #: ``CONVEYOR_DEPLOYMENT``, ``CONVEYOR_ARTIFACT_DIGEST`` and
    #: ``CONVEYOR_VERSION``. Not a complete environment: a target starting a
    #: local process adds :attr:`TargetContext.host_env` below it; a container
    #: gets exactly these.
    env: Mapping[str, str]
    #: Put these on what is started (container labels, a process's record)
    #: and return them from ``list_replicas``: see the ``LABEL_*`` constants.
    labels: Mapping[str, str]


@dataclass(frozen=True)
class ServiceRequest:
    """What :meth:`ServiceTarget.update` rolls the service to."""

    environment: Environment
    deployment_id: str
    #: The ports the replicas listen on, on 127.0.0.1: slot ``n`` (from 1)
    #: uses ``ports[n - 1]``. Consecutive, and when there are at most 9,
    #: ``ports[0]`` ends in 1, so ``PORT=<ports[0] // 10>{{.Task.Slot}}`` is
    #: slot n's port in a Swarm template.
    ports: tuple[int, ...]
    #: The replicas' environment variables, as in :class:`ReplicaRequest`,
    #: without ``PORT`` (it differs per slot).
    env: Mapping[str, str]
    #: Labels for the service and its tasks (without ``LABEL_PORT``).
    labels: Mapping[str, str]


ReplicaState = Literal["running", "starting", "stopped", "failed"]


@dataclass(frozen=True)
class Replica:
    """A replica a target runs (or ran): what ``start`` returns and what
    ``list_replicas`` / ``replicas`` report."""

    #: The target's handle for it: a container id, ``pid:<pid>``, a Swarm
    #: task id. The daemon passes it back to ``stop`` and ``alive``.
    id: str
    #: Where it listens, on 127.0.0.1.
    port: int
    #: The labels it was started with (see the ``LABEL_*`` constants).
    labels: Mapping[str, str]
    #: Unix seconds.
    started_at: float
    #: ``running`` is the only state the daemon sends traffic to (after its
    #: own health check); the others are for reports.
    state: ReplicaState = "running"
    #: The Swarm slot (from 1); 0 for targets without slots.
    slot: int = 0
    #: Why it is not running, in the target's words ("exit code 1", a task
    #: error).
    message: str = ""

    @property
    def environment(self) -> str:
        return self.labels.get(LABEL_ENVIRONMENT, "")

    @property
    def deployment_id(self) -> str:
        return self.labels.get(LABEL_DEPLOYMENT, "")

    @property
    def digest(self) -> str:
        return self.labels.get(LABEL_DIGEST, "")


async def _no_log(text: str) -> None:
    return None


async def _no_probe(port: int) -> ProbeResult:
    return ProbeResult(False, "this daemon gives targets no health probe")


@dataclass(frozen=True)
class TargetContext:
    """What every call of a target is given: where to keep its state, how to
    log, how to probe a replica, and whose replicas are whose.

    Made by the daemon for each call; a target keeps no reference to it.
    """

    #: The environment's name.
    environment: str
    #: This daemon's identity (stable across restarts, different for two
    #: daemons on one machine): the value of ``LABEL_OWNER`` on what it runs.
    owner: str
    #: A folder for the target's own files for this environment (pid files,
    #: replicas' output), ``$CONVEYOR_HOME/delivery/<environment>/<target>``;
    #: it exists, survives restarts, and only this target writes in it.
    state_dir: Path
    #: Seconds between SIGTERM and SIGKILL when stopping a replica.
    stop_grace: float = 10.0
    #: The environment a local process starts from (the daemon's stage base
    #: environment: ``PATH``, ``HOME``, ``LANG``...): a target starting local
    #: processes puts :attr:`ReplicaRequest.env` over it.
    host_env: Mapping[str, str] = field(default_factory=dict)
    #: Appends a line to the deployment's log (and the deploy stage's log).
    log_line: Callable[[str], Awaitable[None]] = field(default=_no_log, repr=False)
    #: Runs the environment's health check once against a replica's port.
    probe_port: Callable[[int], Awaitable[ProbeResult]] = field(default=_no_probe, repr=False)

    async def log(self, text: str) -> None:
        """Write one line to the deployment's log (no secrets in it)."""
        await self.log_line(text)

    async def probe(self, port: int) -> ProbeResult:
        """Check the replica listening on ``port`` once, with the
        environment's health check (an HTTP GET of its path, or its command);
        bounded by :attr:`HealthCheck.timeout`. Never raises for an
        unhealthy replica: the result says why."""
        return await self.probe_port(port)


class DeployTarget(Protocol):
    """What every deploy target has, whatever its :attr:`rollout`.

    Contributed by a plugin through ``conveyor_deploy_targets``; the
    environment's ``target:`` names it.
    """

    #: What ``target:`` names in an environment.
    name: str
    #: One line for ``conveyor plugins`` and the docs.
    description: str
    #: :data:`REPLICA_ROLLOUT` or :data:`SERVICE_ROLLOUT`.
    rollout: str

    @property
    def artifact_kinds(self) -> tuple[str, ...]:
        """The artifact kinds it can run (``("file",)``, ``("oci-image",)``);
        deploying another kind is refused before anything starts. A class
        attribute will do: ``artifact_kinds = (FILE,)``."""
        ...

    def validate(self, options: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
        """Check an environment's target options (its ``with:`` mapping) when
        the pipeline file or the daemon's configuration is loaded.

        Yield ``(field, message)`` pairs, ``field`` relative to the
        environment (``"with.network"``); nothing when valid. Fast, no side
        effects (it runs on the event loop).
        """
        ...

    # Optional (read with getattr):
    #
    # requires_command: bool
    #     True when environments on this target must give the service
    #     command (``run:``), as ``process`` does: a pipeline file without
    #     it is invalid. Without it, ``run:`` is optional (an image's own
    #     entrypoint runs).
    # async def output_tail(self, ctx: TargetContext, replica: Replica) -> str
    #     The last lines of a replica's output (a process's log, a
    #     container's logs), quoted in the deployment log when the replica
    #     fails to become healthy or stops. "" when there is nothing to say.
    # async def check(self, ctx: TargetContext, environment: Environment) -> None
    #     Called before a deployment starts anything: raise TargetError when
    #     the target cannot deploy now (the engine is unreachable, the image
    #     is missing from it), so the deployment fails at once and the
    #     running version is not touched.


class ReplicaTarget(DeployTarget, Protocol):
    """A target whose replicas the daemon rolls one at a time
    (``rollout = "replica"``): see the module docstring."""

    async def start(self, ctx: TargetContext, request: ReplicaRequest) -> Replica:
        """Start one replica of ``request.environment.artifact`` with
        ``request.env`` (over ``ctx.host_env`` for a local process) and
        ``request.labels``, listening on 127.0.0.1:``request.port``; return
        as soon as it is started (the daemon waits for its health check).

        Raises :class:`TargetError` when it cannot be started. Cancellation:
        see the module docstring (labelled, or stopped, before re-raising).
        """
        ...

    async def stop(self, ctx: TargetContext, replica: Replica, grace: float) -> None:
        """Stop a replica and everything it started: SIGTERM (or the
        engine's stop), then SIGKILL after ``grace`` seconds; remove what is
        left of it (a stopped container, a record). Return once it is gone.
        A replica that is already gone is not an error."""
        ...

    async def alive(self, ctx: TargetContext, replica: Replica) -> bool:
        """Whether the replica is still running (its process, its
        container); not whether it is healthy, which the daemon probes."""
        ...

    async def list_replicas(self, ctx: TargetContext, environment: str) -> list[Replica]:
        """Every replica this target runs, or left stopped but not removed,
        for ``environment`` and carrying ``LABEL_OWNER == ctx.owner``, with
        its labels and :attr:`Replica.state`. Called after a restart (and
        before each deployment) to reconcile what runs with what the daemon
        recorded."""
        ...


class ServiceTarget(DeployTarget, Protocol):
    """A target that updates a whole service itself (``rollout =
    "service"``): see the module docstring."""

    async def update(self, ctx: TargetContext, request: ServiceRequest) -> list[Replica]:
        """Create the environment's service, or update it, to run
        ``request.environment`` (artifact, configuration, replicas) on
        ``request.ports``, and wait until the target's own update is over
        (every slot's task runs the new spec, or the update failed). Return
        the replicas as they are then. The daemon then health-checks each of
        them itself, and watches them; a rollback is another ``update``, to
        the previous deployment's environment.

        Raises :class:`TargetError` when the update cannot be done or the
        target saw it fail (say what the tasks reported).
        """
        ...

    async def replicas(self, ctx: TargetContext, environment: str) -> list[Replica]:
        """The service's replicas now (one per slot, with its state, port
        and labels); ``[]`` when there is no service for ``environment``."""
        ...
