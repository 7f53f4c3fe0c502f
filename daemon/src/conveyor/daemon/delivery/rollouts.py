"""Running deployments on their targets: the rollout of one deployment,
the automatic rollback when it does not become healthy, and the
reconciliation of an environment after a daemon restart.

Each environment is worked on by one task at a time (a rollout or a
reconciliation): :class:`Rollouts` keeps which, and the replicas it knows
serve each environment (replica targets).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import trio

from conveyor.daemon.delivery.frontdoor import FrontProxy, ProxyError
from conveyor.daemon.delivery.health import prober
from conveyor.daemon.delivery.records import DeploymentKind, DeploymentRecord, DeploymentStatus
from conveyor.daemon.delivery.rolling import (
    DEFAULT_PORTS,
    Outcome,
    ReplicaRoller,
    RolloutFailed,
    ServiceRoller,
)
from conveyor.daemon.delivery.rollout import Ledger
from conveyor.daemon.delivery.target import (
    REPLICA_ROLLOUT,
    DeployTarget,
    Environment,
    ProbeResult,
    Replica,
    ReplicaTarget,
    ServiceTarget,
    TargetContext,
    TargetError,
)

log = logging.getLogger(__name__)

Note = Callable[[str], Awaitable[None]]
#: Rebuilds the environment a stored deployment ran (None when it cannot).
EnvironmentOf = Callable[[DeploymentRecord], Awaitable[Environment | None]]
#: Makes a restore deployment: (the deployment to restore, the failed one, why).
MakeRestore = Callable[[DeploymentRecord, DeploymentRecord, str], Awaitable[DeploymentRecord]]


@dataclass(frozen=True)
class ReplicaHealth:
    """One replica as ``GetEnvironment`` shows it."""

    replica: Replica
    healthy: bool
    detail: str


class Rollouts:
    def __init__(
        self,
        *,
        ledger: Ledger,
        targets: Mapping[str, DeployTarget],
        home: Path,
        owner: str,
        host_env: Mapping[str, str],
        proxy_grace: float = 10.0,
        ports: range = DEFAULT_PORTS,
    ) -> None:
        self.ledger = ledger
        #: Where replicas listen (setting ``replica_ports``).
        self.ports = ports
        self.targets = targets
        self.root = home / "delivery"
        self.owner = owner
        self.host_env = dict(host_env)
        self.proxy_grace = proxy_grace
        #: Environment name -> what works on it now ("deployment ID", "recovery").
        self.busy: dict[str, str] = {}
        #: Environment name -> the replicas in its traffic (replica targets).
        self.fleets: dict[str, list[Replica]] = {}

    # -- contexts --------------------------------------------------------------------

    def state_dir(self, environment: str, target: str) -> Path:
        return self.root / environment / target

    def proxy(self, port: int) -> FrontProxy:
        return FrontProxy(self.root / "proxies", port, grace=self.proxy_grace)

    def context(self, env: Environment, note: Note) -> TargetContext:
        return TargetContext(
            environment=env.name,
            owner=self.owner,
            state_dir=self.state_dir(env.name, env.target),
            stop_grace=env.stop_grace,
            host_env=self.host_env,
            log_line=note,
            probe_port=prober(env.health, {**self.host_env, **env.config}),
        )

    async def prepare_dirs(self, *envs: Environment | None) -> None:
        paths = [self.state_dir(e.name, e.target) for e in envs if e is not None]
        paths.append(self.root / "proxies")

        def make() -> None:
            for path in paths:
                path.mkdir(parents=True, exist_ok=True, mode=0o700)

        await trio.to_thread.run_sync(make)

    def _note(self, deployment_id: str) -> Note:
        async def note(message: str) -> None:
            await self.ledger.note(deployment_id, message)

        return note

    def _replica_roller(self, env: Environment, note: Note, proxy: FrontProxy) -> ReplicaRoller:
        target = cast(ReplicaTarget, self.targets[env.target])
        return ReplicaRoller(
            target, lambda e: self.context(e, note), proxy, note, self.owner, self.ports
        )

    # -- one deployment ------------------------------------------------------------------

    async def run(
        self,
        record: DeploymentRecord,
        env: Environment,
        previous: DeploymentRecord | None,
        previous_env: Environment | None,
        make_restore: MakeRestore,
    ) -> None:
        """Roll ``record`` out; on failure restore ``previous`` (a restore
        deployment of its own). Records every transition. The caller holds
        ``busy[env.name]``."""
        note = self._note(record.id)
        await self.ledger.store.update(record.id, started_at=time.time())
        await self.prepare_dirs(env, previous_env)
        target = self.targets[env.target]
        await note(
            f"rolling out {record.artifact_name} {record.version} ({record.digest}) to"
            f" {env.replicas} replica(s) on target {target.name}, front 127.0.0.1:{env.port}"
        )
        check = getattr(target, "check", None)
        try:
            if check is not None:
                await _checked(target.name, check(self.context(env, note), env))
            if target.rollout == REPLICA_ROLLOUT:
                await self._roll_replicas(record, env, previous, previous_env, make_restore)
            else:
                await self._roll_service(record, env, previous, previous_env, make_restore)
        except RolloutFailed as exc:  # nothing started yet (check, proxy)
            await self.ledger.move(record.id, DeploymentStatus.FAILED, str(exc))

    async def _roll_replicas(
        self,
        record: DeploymentRecord,
        env: Environment,
        previous: DeploymentRecord | None,
        previous_env: Environment | None,
        make_restore: MakeRestore,
    ) -> None:
        note = self._note(record.id)
        proxy = self.proxy(env.port)
        swap = previous_env is None or previous_env.port == env.port
        serving = self.fleets.get(env.name, []) if previous_env is not None else []
        if previous_env is not None and previous_env.target != env.target:
            swap = False  # the old replicas are another target's: they keep their own traffic
        try:
            await proxy.ensure(upstreams=[r.port for r in serving] if swap else [])
        except ProxyError as exc:
            raise RolloutFailed(str(exc)) from None
        roller = self._replica_roller(env, note, proxy)
        outcome = Outcome()
        try:
            await roller.roll(env, record.id, serving, outcome, swap=swap)
        except RolloutFailed as exc:
            await note(f"the rollout failed: {exc}")
            await self._abort_replicas(
                record, str(exc), env, outcome, previous, previous_env, make_restore, swap
            )
            return
        self.fleets[env.name] = outcome.new
        if outcome.standby and previous_env is not None:
            old_proxy = proxy if swap else self.proxy(previous_env.port)
            old_roller = self._replica_roller(previous_env, note, old_proxy)
            if not swap:
                await old_roller.route([])
            await note(f"stopping the {len(outcome.standby)} replica(s) of the previous version")
            await old_roller.retire(previous_env, outcome.standby)
            if previous_env.port != env.port:
                await old_proxy.stop()
        await self._healthy(record, env, len(outcome.new))

    async def _healthy(self, record: DeploymentRecord, env: Environment, replicas: int) -> None:
        """The rollout of ``record`` ends healthy with ``replicas`` replicas."""
        await self.ledger.move(
            record.id,
            DeploymentStatus.HEALTHY,
            f"{replicas} replica(s) healthy"
            + (f" through the {env.watch_window:g}s watch window" if env.watch_window else ""),
            healthy_at=time.time(),
        )

    async def _abort_replicas(
        self,
        record: DeploymentRecord,
        reason: str,
        env: Environment,
        outcome: Outcome,
        previous: DeploymentRecord | None,
        previous_env: Environment | None,
        make_restore: MakeRestore,
        swap: bool,
    ) -> None:
        """Put the previous version back (a restore deployment) and stop the
        new replicas; FAILED when there is nothing to put back."""
        note = self._note(record.id)
        proxy = self.proxy(env.port)
        roller = self._replica_roller(env, note, proxy)
        if previous is None or previous_env is None:
            await roller.route([])
            await roller.stop(env, outcome.new)
            self.fleets[env.name] = []
            await self.ledger.move(
                record.id, DeploymentStatus.FAILED, f"{reason}; no earlier version to restore"
            )
            return
        restore = await make_restore(previous, record, reason)
        restore_note = self._note(restore.id)
        old_proxy = proxy if swap else self.proxy(previous_env.port)
        old_roller = self._replica_roller(previous_env, restore_note, old_proxy)
        try:
            if not swap:
                await proxy.stop()
                await roller.stop(env, outcome.new)
                failed: list[Replica] = []
            else:
                failed = outcome.new
            back = await old_roller.restore(previous_env, restore.id, outcome.standby, failed)
        except RolloutFailed as exc:
            self.fleets[env.name] = []
            await self.ledger.move(
                restore.id,
                DeploymentStatus.FAILED,
                f"the previous version did not come back: {exc}",
            )
            await self.ledger.move(
                record.id,
                DeploymentStatus.FAILED,
                f"{reason}; restoring the previous version failed too: {exc}",
            )
            return
        self.fleets[env.name] = back
        await self._finish_restore(record, reason, restore, previous)

    async def _finish_restore(
        self,
        record: DeploymentRecord,
        reason: str,
        restore: DeploymentRecord,
        previous: DeploymentRecord,
    ) -> None:
        await self.ledger.move(
            restore.id,
            DeploymentStatus.HEALTHY,
            f"restored deployment {previous.id} ({previous.version}) after deployment"
            f" {record.id} failed",
            healthy_at=time.time(),
        )
        await self.ledger.move(
            record.id,
            DeploymentStatus.ROLLED_BACK,
            f"{reason}; the previous version ({previous.version}, deployment {previous.id})"
            f" was restored by deployment {restore.id}",
            restored_by=restore.id,
        )

    async def _roll_service(
        self,
        record: DeploymentRecord,
        env: Environment,
        previous: DeploymentRecord | None,
        previous_env: Environment | None,
        make_restore: MakeRestore,
    ) -> None:
        note = self._note(record.id)
        proxy = self.proxy(env.port)
        try:
            await proxy.ensure()
        except ProxyError as exc:
            raise RolloutFailed(str(exc)) from None
        target = cast(ServiceTarget, self.targets[env.target])
        roller = ServiceRoller(
            target, lambda e: self.context(e, note), proxy, note, self.owner, self.ports
        )
        try:
            replicas = await roller.update(env, record.id)
            await roller.watch(env, replicas)
        except RolloutFailed as exc:
            reason = str(exc)
            await note(f"the rollout failed: {reason}")
            if previous is None or previous_env is None:
                await self.ledger.move(
                    record.id, DeploymentStatus.FAILED, f"{reason}; no earlier version to restore"
                )
                return
            restore = await make_restore(previous, record, reason)
            restore_note = self._note(restore.id)
            back = ServiceRoller(
                target,
                lambda e: self.context(e, restore_note),
                proxy,
                restore_note,
                self.owner,
                self.ports,
            )
            try:
                await back.update(previous_env, restore.id)
            except RolloutFailed as again:
                await self.ledger.move(
                    restore.id,
                    DeploymentStatus.FAILED,
                    f"the previous version did not come back: {again}",
                )
                await self.ledger.move(
                    record.id,
                    DeploymentStatus.FAILED,
                    f"{reason}; restoring the previous version failed too: {again}",
                )
                return
            await self._finish_restore(record, reason, restore, previous)
            return
        await self._healthy(record, env, len(replicas))

    # -- after a restart ---------------------------------------------------------------

    async def reconcile(
        self,
        environment: str,
        current: DeploymentRecord | None,
        current_env: Environment | None,
        interrupted: list[DeploymentRecord],
        environment_of: EnvironmentOf,
    ) -> None:
        """Leave ``environment`` on its last healthy deployment (``current``):
        keep its replicas that run and are healthy, start those missing,
        stop everything else (what an interrupted rollout started), point
        the front proxy at them. What was done is noted on the interrupted
        deployments."""
        notes: list[str] = []
        seen: dict[str, DeployTarget] = {}
        for record in [*([current] if current else []), *interrupted]:
            target = self.targets.get(record.target)
            if target is None:
                notes.append(f"deploy target {record.target} is not installed: left as it is")
            else:
                seen[target.name] = target
        keep_ids = await self._lineage(current)
        await self.prepare_dirs(current_env)

        async def note(message: str) -> None:
            notes.append(message)

        for target in seen.values():
            probe_env = (
                current_env
                if current_env is not None and current_env.target == target.name
                else None
            )
            ctx = self._recovery_context(environment, target.name, probe_env, note)
            if target.rollout == REPLICA_ROLLOUT:
                await self._reconcile_replicas(
                    cast(ReplicaTarget, target),
                    ctx,
                    environment,
                    keep_ids,
                    probe_env,
                    current.id if current is not None else "",
                    notes,
                )
            elif probe_env is not None and current is not None:
                await self._reconcile_service(
                    cast(ServiceTarget, target), ctx, probe_env, current, notes
                )
        for record in interrupted:
            env = await environment_of(record)
            if env is not None and (current_env is None or env.port != current_env.port):
                await self.proxy(env.port).stop()
        if current_env is None:
            notes.append(f"environment {environment} runs nothing: it had no healthy deployment")
        for record in interrupted:
            for message in notes:
                await self.ledger.note(record.id, f"after the restart: {message}")
        for message in notes:
            log.info("environment %s after the restart: %s", environment, message)

    async def _lineage(self, current: DeploymentRecord | None) -> set[str]:
        """The deployments whose replicas ``current`` runs: itself, and for
        a restore the deployment it put back (and so on)."""
        ids: set[str] = set()
        record = current
        while record is not None and record.id not in ids:
            ids.add(record.id)
            if record.kind is not DeploymentKind.RESTORE or not record.restores_id:
                break
            record = await self.ledger.store.get(record.restores_id, events=False)
        return ids

    def _recovery_context(
        self, environment: str, target: str, env: Environment | None, note: Note
    ) -> TargetContext:
        if env is not None:
            return self.context(env, note)
        return TargetContext(
            environment=environment,
            owner=self.owner,
            state_dir=self.state_dir(environment, target),
            host_env=self.host_env,
            log_line=note,
        )

    async def _reconcile_replicas(
        self,
        target: ReplicaTarget,
        ctx: TargetContext,
        environment: str,
        keep_ids: set[str],
        env: Environment | None,
        current_id: str,
        notes: list[str],
    ) -> None:
        await trio.to_thread.run_sync(lambda: ctx.state_dir.mkdir(parents=True, exist_ok=True))
        replicas = await target.list_replicas(ctx, environment)
        keep: list[Replica] = []
        stop: list[Replica] = []
        for replica in replicas:
            if env is None or replica.deployment_id not in keep_ids or replica.state != "running":
                stop.append(replica)
                continue
            healthy = await target.alive(ctx, replica) and (await ctx.probe(replica.port)).healthy
            (keep if healthy else stop).append(replica)
        grace = env.stop_grace if env is not None else ctx.stop_grace
        proxy = self.proxy(env.port) if env is not None else None
        if env is not None and proxy is not None:
            # the healthy version first (missing replicas started, then one
            # proxy update), the rest stopped after their connections drain
            await proxy.ensure(upstreams=[r.port for r in keep])
            if len(keep) < env.replicas:

                async def started(message: str) -> None:
                    notes.append(message)

                roller = ReplicaRoller(
                    target, lambda e: ctx, proxy, started, self.owner, self.ports
                )
                while len(keep) < env.replicas:
                    try:
                        replica = await roller.start_ready(env, current_id)
                    except RolloutFailed as exc:
                        notes.append(f"a missing replica could not be started again: {exc}")
                        break
                    keep.append(replica)
            await proxy.set_upstreams([r.port for r in keep])
        for replica in stop:
            if proxy is not None:
                await proxy.drain(replica.port, grace)
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + grace + 5
                try:
                    await target.stop(ctx, replica, grace)
                except Exception:
                    log.exception("deploy target %s failed to stop %s", target.name, replica.id)
        if stop:
            notes.append(
                f"stopped {len(stop)} replica(s) that were not part of the healthy version"
                f" (ports {', '.join(str(r.port) for r in stop)})"
            )
        if env is None:
            self.fleets[environment] = []
            return
        self.fleets[environment] = keep
        notes.append(
            f"{len(keep)} healthy replica(s) of {env.artifact.version} serve 127.0.0.1:{env.port}"
            f" (ports {', '.join(str(r.port) for r in keep) or 'none'})"
        )

    async def _reconcile_service(
        self,
        target: ServiceTarget,
        ctx: TargetContext,
        env: Environment,
        current: DeploymentRecord,
        notes: list[str],
    ) -> None:
        replicas = await target.replicas(ctx, env.name)
        running = [r for r in replicas if r.state == "running" and r.digest == current.digest]
        proxy = self.proxy(env.port)
        await proxy.ensure()
        if len(running) < env.replicas or len(running) != len(replicas):

            async def noted(message: str) -> None:
                notes.append(message)

            roller = ServiceRoller(target, lambda e: ctx, proxy, noted, self.owner, self.ports)
            try:
                running = await roller.update(env, current.id)
            except RolloutFailed as exc:
                notes.append(f"the service could not be put back on {current.version}: {exc}")
                return
        else:
            await proxy.set_upstreams([r.port for r in running])
        notes.append(f"{len(running)} replica(s) of {current.version} serve 127.0.0.1:{env.port}")

    # -- supervision ------------------------------------------------------------------

    async def stopped(self, env: Environment) -> list[Replica]:
        """The replicas in ``env``'s traffic (a replica target's) that no
        longer run."""
        target = self.targets.get(env.target)
        fleet = list(self.fleets.get(env.name, []))
        if target is None or target.rollout != REPLICA_ROLLOUT or not fleet:
            return []

        async def quiet(message: str) -> None:
            return None

        ctx = self.context(env, quiet)
        dead = []
        for replica in fleet:
            try:
                running = await cast(ReplicaTarget, target).alive(ctx, replica)
            except Exception:
                log.exception("deploy target %s failed to tell whether a replica runs", target.name)
                running = True  # do not replace what may run
            if not running:
                dead.append(replica)
        return dead

    async def heal(self, env: Environment, deployment_id: str, dead: list[Replica]) -> None:
        """Replace ``dead`` replicas of ``env`` (see :meth:`stopped`): out of
        traffic at once, then a new one each, health-gated, into traffic.
        Noted on the deployment that runs (``deployment_id``). The caller
        holds ``busy[env.name]``."""
        replica_target = cast(ReplicaTarget, self.targets[env.target])
        note = self._note(deployment_id)
        ctx = self.context(env, note)
        fleet = self.fleets.get(env.name, [])
        dead = [r for r in dead if r in fleet]  # a deployment may have come in between
        if not dead:
            return
        proxy = self.proxy(env.port)
        roller = ReplicaRoller(replica_target, lambda e: ctx, proxy, note, self.owner, self.ports)
        serving = [r for r in fleet if r not in dead]
        await roller.route(serving)
        self.fleets[env.name] = serving
        for replica in dead:
            tail = await roller.tail(ctx, replica)
            await note(
                f"replica on port {replica.port} stopped running"
                + (f" (its last output: {tail})" if tail else "")
                + "; starting a replacement"
            )
        await roller.stop(env, dead)
        for _ in dead:
            try:
                replacement = await roller.start_ready(env, deployment_id)
            except RolloutFailed as exc:
                await note(f"the replacement did not become healthy: {exc}")
                return
            serving.append(replacement)
            await roller.route(serving)
            self.fleets[env.name] = list(serving)
            await note(f"replacement on port {replacement.port} takes traffic")

    # -- stopping -------------------------------------------------------------------

    async def stop_environment(
        self, environment: str, places: list[tuple[str, int, float]], note: Note
    ) -> tuple[int, bool]:
        """Stop everything ``environment`` runs at each ``(target, front
        port, stop grace)``: the front proxy first (its open connections
        finish), then every replica the target runs for it (replica
        targets), or the whole service (a service target's optional
        ``remove``). Returns (replicas stopped, whether a proxy was stopped).
        Raises :class:`TargetError` when a target is not installed or cannot
        stop environments. The caller holds ``busy[environment]``."""
        for target_name, _, _ in places:
            target = self.targets.get(target_name)
            if target is None:
                raise TargetError(f"deploy target {target_name} is not installed")
            if target.rollout != REPLICA_ROLLOUT and getattr(target, "remove", None) is None:
                raise TargetError(f"the {target_name} target cannot stop an environment")
        stopped, proxies = 0, False
        for port in dict.fromkeys(port for _, port, _ in places):
            proxy = self.proxy(port)
            if await proxy.status() is not None:
                await proxy.stop()
                proxies = True
                await note(f"stopped the front proxy on 127.0.0.1:{port}")
        for target_name, grace in {name: grace for name, _, grace in places}.items():
            target = self.targets[target_name]
            ctx = self._recovery_context(environment, target_name, None, note)
            await trio.to_thread.run_sync(
                functools.partial(ctx.state_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
            )
            if target.rollout == REPLICA_ROLLOUT:
                replica_target = cast(ReplicaTarget, target)
                for replica in await replica_target.list_replicas(ctx, environment):
                    with trio.CancelScope(shield=True) as scope:
                        scope.deadline = trio.current_time() + grace + 5
                        await replica_target.stop(ctx, replica, grace)
                    stopped += 1
                    await note(f"stopped replica {replica.id} on port {replica.port}")
            else:
                remove = getattr(target, "remove", None)
                assert remove is not None  # checked above
                removed = await remove(ctx, environment)
                stopped += int(removed or 0)
                await note(f"removed the {target_name} service ({removed} replica(s))")
        self.fleets[environment] = []
        return stopped, proxies

    # -- live state -------------------------------------------------------------------

    async def live_replicas(self, env: Environment) -> list[ReplicaHealth]:
        """What runs in the environment now, each probed once."""
        target = self.targets.get(env.target)
        if target is None:
            return []
        await self.prepare_dirs(env)

        async def quiet(message: str) -> None:
            return None

        ctx = self.context(env, quiet)
        if target.rollout == REPLICA_ROLLOUT:
            replicas = await cast(ReplicaTarget, target).list_replicas(ctx, env.name)
        else:
            replicas = await cast(ServiceTarget, target).replicas(ctx, env.name)
        results: dict[str, ProbeResult] = {}

        async def probe(replica: Replica) -> None:
            results[replica.id] = await ctx.probe(replica.port)

        async with trio.open_nursery() as nursery:
            for replica in replicas:
                if replica.state == "running":
                    nursery.start_soon(probe, replica)
        return [
            ReplicaHealth(
                r,
                results[r.id].healthy if r.id in results else False,
                results[r.id].detail if r.id in results else (r.message or r.state),
            )
            for r in replicas
        ]

    async def front_probe(self, env: Environment) -> ProbeResult:
        """The health check through the environment's front port."""

        async def quiet(message: str) -> None:
            return None

        return await self.context(env, quiet).probe(env.port)


async def _checked(target: str, call: Awaitable[None]) -> None:
    try:
        await call
    except TargetError as exc:
        raise RolloutFailed(f"target {target} cannot deploy now: {exc}") from None
    except Exception as exc:
        log.exception("deploy target %s failed its check", target)
        raise RolloutFailed(f"target {target} raised {exc!r} in its check") from None
