"""The rolling algorithms: replicas one at a time behind the front proxy
(replica targets), or a whole service updated by its target (service
targets). Both decide success from the daemon's own health checks.

Replica targets, for a deployment of ``replicas`` replicas::

    for each new replica:
        start it on a fresh port; wait until it passes its health check
        (readiness timeout; a replica that stops or answers unhealthy
        ``failure_threshold`` times fails at once)
        in one proxy update: add it, take one old replica out of traffic
        (the old one is kept running, out of traffic: it is the standby)
    watch every new replica through the watch window
    success: let each standby's connections drain, stop it

A failure at any point raises :class:`RolloutFailed`; the caller restores
the previous version with :meth:`ReplicaRoller.restore`, which puts the
standby replicas back into traffic first (they never stopped), so the
previous version serves the whole time and an abort takes one proxy
update. Cancellation propagates; stops are shielded with a deadline.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from conveyor.daemon.delivery import health
from conveyor.daemon.delivery.frontdoor import FrontProxy, ProxyError
from conveyor.daemon.delivery.target import (
    LABEL_DEPLOYMENT,
    LABEL_DIGEST,
    LABEL_ENVIRONMENT,
    LABEL_OWNER,
    LABEL_PORT,
    DeployTarget,
    Environment,
    Replica,
    ReplicaRequest,
    ReplicaTarget,
    ServiceRequest,
    ServiceTarget,
    TargetContext,
    TargetError,
)

log = logging.getLogger(__name__)

#: Seconds added to a stop's grace period before the daemon gives up on it.
STOP_SLACK = 5.0

Note = Callable[[str], Awaitable[None]]
T = TypeVar("T")


class RolloutFailed(Exception):
    """The new version did not become (or stay) healthy; the message says why."""


#: Where replicas listen when nothing says otherwise (setting ``replica_ports``):
#: below Linux's range for outgoing connections (32768-60999).
DEFAULT_PORTS = range(12000, 20000)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(ports: range = DEFAULT_PORTS) -> int:
    """A port of ``ports`` nothing listens on at 127.0.0.1 now, tried from
    a random one on (so two rollouts seldom pick the same). Not the system's
    ``bind(0)``: that picks from the range outgoing connections take ports
    from, and one may take it before the replica binds it. Blocking."""
    start = random.randrange(len(ports))
    for index in range(len(ports)):
        port = ports[(start + index) % len(ports)]
        if _bindable(port):
            return port
    raise RolloutFailed(f"no free port in {ports.start}-{ports.stop - 1} on 127.0.0.1")


def port_run(first: int, count: int) -> tuple[int, ...]:
    """``count`` consecutive ports from ``first``, which must end in 1 (for
    up to 9 ports); () when it does not."""
    if count < 1 or (count <= 9 and first % 10 != 1) or first + count - 1 > 65535:
        return ()
    return tuple(range(first, first + count))


def port_block(count: int, ports: range = DEFAULT_PORTS) -> tuple[int, ...]:
    """``count`` consecutive free ports of ``ports`` whose first ends in 1
    (for up to 9): slot ``n`` listens on ``ports[n - 1]``. Blocking."""
    for _ in range(200):
        base = free_port(ports) // 10 * 10 + 1
        block = tuple(range(base, base + count))
        if block[0] < ports.start or block[-1] >= ports.stop:
            continue
        if all(_bindable(port) for port in block):
            return block
    raise RolloutFailed(f"found no {count} consecutive free ports on 127.0.0.1")


def labels(env: Environment, deployment_id: str, owner: str, port: int | None) -> dict[str, str]:
    found = {
        LABEL_ENVIRONMENT: env.name,
        LABEL_DEPLOYMENT: deployment_id,
        LABEL_DIGEST: env.artifact.digest,
        LABEL_OWNER: owner,
    }
    if port is not None:
        found[LABEL_PORT] = str(port)
    return found


def service_env(env: Environment, deployment_id: str) -> dict[str, str]:
    """The replicas' variables, without ``PORT``."""
    return {
        **env.config,
        "CONVEYOR_ENVIRONMENT": env.name,
        "CONVEYOR_DEPLOYMENT": deployment_id,
        "CONVEYOR_ARTIFACT_DIGEST": env.artifact.digest,
        "CONVEYOR_VERSION": env.artifact.version,
    }


async def _target_call(what: str, target_name: str, call: Awaitable[T]) -> T:
    """Await a target's method; its failures become :class:`RolloutFailed`."""
    try:
        return await call
    except TargetError as exc:
        raise RolloutFailed(f"{what}: {exc}") from None
    except Exception as exc:
        log.exception("deploy target %s failed to %s", target_name, what)
        raise RolloutFailed(f"{what}: target {target_name} raised {exc!r}") from None


@dataclass
class Outcome:
    """What a replica rollout leaves running: the new replicas, in traffic,
    and the previous ones, running out of traffic (the standby)."""

    new: list[Replica] = field(default_factory=list)
    standby: list[Replica] = field(default_factory=list)


TargetT = TypeVar("TargetT", bound=DeployTarget)


class _Roller(Generic[TargetT]):
    """What a roller works with: its target, the target's context for an
    environment, the environment's front proxy, the deployment's log, the
    owner label of what it starts, the ports replicas may listen on."""

    def __init__(
        self,
        target: TargetT,
        contexts: Callable[[Environment], TargetContext],
        proxy: FrontProxy,
        note: Note,
        owner: str,
        ports: range = DEFAULT_PORTS,
    ) -> None:
        self.target: TargetT = target
        self.contexts = contexts
        self.proxy = proxy
        self.note = note
        self.owner = owner
        self.ports = ports


class ReplicaRoller(_Roller[ReplicaTarget]):
    """Rolls a replica target's replicas behind one front proxy."""

    async def start_ready(self, env: Environment, deployment_id: str) -> Replica:
        """Start one replica of ``env`` on a fresh port and wait until it is
        healthy; a replica that does not get there is stopped and
        :class:`RolloutFailed` raised."""
        ctx = self.contexts(env)
        port = await trio.to_thread.run_sync(free_port, self.ports)
        request = ReplicaRequest(
            environment=env,
            deployment_id=deployment_id,
            port=port,
            env={**service_env(env, deployment_id), "PORT": str(port)},
            labels=labels(env, deployment_id, self.owner, port),
        )
        name = self.target.name
        replica = await _target_call(
            f"start a replica on port {port}", name, self.target.start(ctx, request)
        )
        started = trio.current_time()

        async def alive() -> bool:
            try:
                return await self.target.alive(ctx, replica)
            except Exception:
                log.exception("deploy target %s failed to tell whether a replica runs", name)
                return False

        try:
            problem = await health.wait_ready(
                ctx.probe,
                port,
                timeout=env.readiness_timeout,
                interval=env.health.interval,
                failure_threshold=env.health.failure_threshold,
                alive=alive,
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.stop(env, [replica])
            raise
        if problem is not None:
            reason = problem.reason
            tail = await self.tail(ctx, replica)
            if tail:
                reason += f"; its last output: {tail}"
            await self.stop(env, [replica])
            raise RolloutFailed(reason)
        await self.note(
            f"replica on port {port} is healthy after {trio.current_time() - started:.2f}s"
        )
        return replica

    async def tail(self, ctx: TargetContext, replica: Replica) -> str:
        """The replica's last output, when the target can tell ("" otherwise)."""
        tail = getattr(self.target, "output_tail", None)
        if tail is None:
            return ""
        try:
            return str(await tail(ctx, replica))[-500:]
        except Exception:
            return ""

    async def roll(
        self,
        env: Environment,
        deployment_id: str,
        serving: Sequence[Replica],
        outcome: Outcome,
        *,
        swap: bool,
    ) -> None:
        """Bring ``env.replicas`` new replicas into traffic, one at a time,
        each replacing one of ``serving`` (unless ``swap`` is false: a new
        front port, where the old replicas keep serving the old one), then
        watch them.

        ``outcome`` is filled as it goes: when this raises
        (:class:`RolloutFailed`, or cancellation) it says what to restore.
        """
        old = list(serving)
        in_traffic = list(serving) if swap else []
        try:
            for index in range(env.replicas):
                await self.note(f"starting replica {index + 1}/{env.replicas}")
                replica = await self.start_ready(env, deployment_id)
                outcome.new.append(replica)
                leaving = old.pop(0) if old and swap else None
                in_traffic = [r for r in in_traffic if r is not leaving] + [replica]
                await self.route(in_traffic)
                if leaving is not None:
                    outcome.standby.append(leaving)
                    await self.note(
                        f"replica on port {replica.port} takes traffic; port {leaving.port}"
                        " (previous version) is out of traffic, kept until the watch ends"
                    )
                else:
                    await self.note(f"replica on port {replica.port} takes traffic")
            if old and swap:  # fewer replicas than before
                outcome.standby += old
                await self.route([r for r in in_traffic if r not in old])
            if not swap:
                outcome.standby += old
            if env.watch_window > 0:
                await self.note(f"watching {len(outcome.new)} replica(s) for {env.watch_window:g}s")
                ctx = self.contexts(env)
                problem = await health.watch(
                    ctx.probe,
                    [r.port for r in outcome.new],
                    window=env.watch_window,
                    interval=env.health.interval,
                    failure_threshold=env.health.failure_threshold,
                )
                if problem is not None:
                    raise RolloutFailed(problem.reason)
        except BaseException:
            outcome.standby += [r for r in old if r not in outcome.standby]
            raise

    async def route(self, replicas: Sequence[Replica]) -> None:
        """Send new connections to ``replicas`` only (one proxy update)."""
        try:
            await self.proxy.set_upstreams([r.port for r in replicas])
        except (OSError, trio.TooSlowError, ProxyError) as exc:
            raise RolloutFailed(f"the front proxy on port {self.proxy.port} failed: {exc}") from exc

    async def retire(self, env: Environment, replicas: Sequence[Replica]) -> None:
        """Let each replica's connections drain (up to the stop grace), then
        stop it; the replicas at once (each stop costs the engine or the
        process its own time). For replicas already out of traffic."""

        async def retire_one(replica: Replica) -> None:
            drained = await self.proxy.drain(replica.port, env.stop_grace)
            if not drained:
                await self.note(
                    f"connections to port {replica.port} did not drain within"
                    f" {env.stop_grace:g}s; stopping it anyway"
                )
            await self.stop(env, [replica])

        async with trio.open_nursery() as nursery:
            for replica in replicas:
                nursery.start_soon(retire_one, replica)

    async def stop(self, env: Environment, replicas: Sequence[Replica]) -> None:
        """Stop replicas (shielded, each within its grace plus
        :data:`STOP_SLACK` seconds); failures are logged, never raised."""
        ctx = self.contexts(env)
        for replica in replicas:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + env.stop_grace + STOP_SLACK
                try:
                    await self.target.stop(ctx, replica, env.stop_grace)
                except Exception:
                    log.exception(
                        "deploy target %s failed to stop %s", self.target.name, replica.id
                    )
            if scope.cancelled_caught:
                log.error("deploy target %s did not stop %s in time", self.target.name, replica.id)

    async def healthy_now(self, env: Environment, replicas: Sequence[Replica]) -> list[Replica]:
        """The replicas that run and pass one health probe now."""
        ctx = self.contexts(env)
        healthy = []
        for replica in replicas:
            try:
                running = await self.target.alive(ctx, replica)
            except Exception:
                running = False
            if running and (await ctx.probe(replica.port)).healthy:
                healthy.append(replica)
        return healthy

    async def restore(
        self,
        previous: Environment,
        deployment_id: str,
        standby: Sequence[Replica],
        failed: Sequence[Replica],
    ) -> list[Replica]:
        """Put the previous version back into traffic: its standby replicas
        that still run and are healthy first (one proxy update), then new
        ones of ``previous`` for those missing (health-gated); stop the
        ``failed`` replicas (after their connections drain). Returns what
        serves. Raises :class:`RolloutFailed` when the previous version
        cannot be brought back either."""
        back = await self.healthy_now(previous, standby)
        if back:
            await self.route(back)
            ports = ", ".join(str(r.port) for r in back)
            await self.note(f"previous version back in traffic on port(s) {ports}")
        gone = [r for r in standby if r not in back]
        try:
            while len(back) < previous.replicas:
                replica = await self.start_ready(previous, deployment_id)
                back.append(replica)
                await self.route(back)
                await self.note(f"previous version started again on port {replica.port}")
        finally:
            if not back:
                await self.route([])
            await self.retire(previous, failed)
            if gone:
                await self.stop(previous, gone)
        return back


class ServiceRoller(_Roller[ServiceTarget]):
    """Updates a service target's service and checks its replicas."""

    async def update(self, env: Environment, deployment_id: str) -> list[Replica]:
        """Update the service to ``env``, wait until every replica the
        target reports is running and healthy (readiness timeout), route
        traffic to them. Raises :class:`RolloutFailed`."""
        ctx = self.contexts(env)
        ports = await self._ports(ctx, env)
        request = ServiceRequest(
            environment=env,
            deployment_id=deployment_id,
            ports=ports,
            env=service_env(env, deployment_id),
            labels=labels(env, deployment_id, self.owner, None),
        )
        await self.note(f"updating the service (ports {ports[0]}-{ports[-1]})")
        replicas = await _target_call(
            "update the service", self.target.name, self.target.update(ctx, request)
        )
        running = [r for r in replicas if r.state == "running"]
        if len(running) < env.replicas:
            states = ", ".join(f"slot {r.slot}: {r.state} {r.message}".strip() for r in replicas)
            raise RolloutFailed(
                f"{len(running)} of {env.replicas} replicas run after the update"
                f" ({states or 'none'})"
            )

        async def alive() -> bool:
            return True

        for replica in running:
            problem = await health.wait_ready(
                ctx.probe,
                replica.port,
                timeout=env.readiness_timeout,
                interval=env.health.interval,
                failure_threshold=env.health.failure_threshold,
                alive=alive,
            )
            if problem is not None:
                raise RolloutFailed(problem.reason)
        try:
            await self.proxy.set_upstreams([r.port for r in running])
        except (OSError, trio.TooSlowError, ProxyError) as exc:
            raise RolloutFailed(f"the front proxy on port {self.proxy.port} failed: {exc}") from exc
        await self.note(f"{len(running)} replica(s) healthy and in traffic")
        return running

    async def _ports(self, ctx: TargetContext, env: Environment) -> tuple[int, ...]:
        """The ports the service's replicas listen on now, when they are as
        many as ``env.replicas`` (each replica is then replaced on its own
        port, and the front proxy sends traffic to the others meanwhile: a
        stop-first update costs no request); else a new block."""
        try:
            current = await self.target.replicas(ctx, env.name)
        except Exception:
            current = []
        ports = tuple(sorted({r.port for r in current}))
        if len(ports) == env.replicas and ports == port_run(ports[0] if ports else 0, len(ports)):
            return ports
        return await trio.to_thread.run_sync(port_block, env.replicas, self.ports)

    async def watch(self, env: Environment, replicas: Sequence[Replica]) -> None:
        if env.watch_window <= 0:
            return
        await self.note(f"watching {len(replicas)} replica(s) for {env.watch_window:g}s")
        ctx = self.contexts(env)
        problem = await health.watch(
            ctx.probe,
            [r.port for r in replicas],
            window=env.watch_window,
            interval=env.health.interval,
            failure_threshold=env.health.failure_threshold,
        )
        if problem is not None:
            raise RolloutFailed(problem.reason)
