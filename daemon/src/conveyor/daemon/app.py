"""Wires the daemon together and runs it until SIGTERM/SIGINT.

Start-up: open the store and close out runs a previous daemon left in
flight (recovery), stop their leftover processes, load plugins, start the
plugins' notifier and the scheduler, remove the workspaces of finished runs
and requeue acknowledged runs that never started, then serve gRPC. Every
step can be done again: a start-up killed half-way is finished by the next
one.

A full disk does not stop the start-up: the store opens without free space
(see :class:`~conveyor.daemon.store.Database`); if recovery cannot be
recorded, gRPC serves reads at once, new runs are refused, and recovery
finishes (requeueing included) as soon as space is freed.

Shutdown (SIGTERM/SIGINT, or :attr:`Daemon.shutdown_requested`): health
turns NOT_SERVING and no run starts any more (runs submitted meanwhile are
stored as queued, for the next start-up); running runs are cancelled or
allowed to finish (``shutdown_mode``) and recorded as interrupted; state
writes waiting for disk space give up at the grace deadline; the gRPC
server stops; plugins' pending notifications are delivered for what is left
of ``shutdown_timeout`` (counted from the signal), then cancelled; the store
closes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import IO

import trio

from conveyor.daemon.api.bridge import TrioBridge
from conveyor.daemon.api.server import ApiServer
from conveyor.daemon.artifacts import signing
from conveyor.daemon.artifacts.catalog import ArtifactCatalog
from conveyor.daemon.artifacts.recorder import ArtifactDeps, builder_id, builder_version
from conveyor.daemon.config import Config
from conveyor.daemon.delivery.records import DeploymentRecord
from conveyor.daemon.delivery.service import DeliveryService
from conveyor.daemon.events import EventBus
from conveyor.daemon.executors.process import kill_leftover_processes, stage_marker
from conveyor.daemon.logstore import LogStore
from conveyor.daemon.plugins import Plugins
from conveyor.daemon.scheduler import Journal, Scheduler
from conveyor.daemon.scheduler.runner import RunDeps, base_environment
from conveyor.daemon.service import RunService
from conveyor.daemon.store import ArtifactStore, Database, RunStore
from conveyor.daemon.store.database import out_of_space
from conveyor.daemon.store.deployments import DeploymentStore
from conveyor.daemon.store.runs import Recovery
from conveyor.daemon.telemetry import Telemetry
from conveyor.daemon.telemetry import configure as configure_telemetry

log = logging.getLogger(__name__)

INTERRUPTED_REASON = "the daemon stopped while the run was in progress"
WAITING_FOR_SPACE = (
    "the daemon cannot record its start-up recovery: no space left on device in its home;"
    " new runs are refused until space is freed"
)


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.shutdown_requested = trio.Event()
        self.service: RunService | None = None

    async def run(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until asked to stop. ``task_status.started`` gets the bound addresses."""
        config = self.config
        lock = await trio.to_thread.run_sync(_lock_home, config.home)
        try:
            await self._run(task_status=task_status)
        finally:
            lock.close()

    async def _run(self, *, task_status: trio.TaskStatus[list[str]]) -> None:
        config = self.config
        db = await trio.to_thread.run_sync(Database, config.database_path)
        try:
            store = RunStore(db)
            recovery = await _recover(store)
            marker = await trio.to_thread.run_sync(stage_marker, config.home)
            killed = await trio.to_thread.run_sync(kill_leftover_processes, marker)
            if killed:
                log.warning("stopped %d process(es) left behind by the previous daemon", killed)
            telemetry = configure_telemetry(
                exporter=config.telemetry_exporter, endpoint=config.otlp_endpoint, home=config.home
            )
            key = await trio.to_thread.run_sync(signing.load_or_create, config.home)
            artifacts = ArtifactDeps(
                store=ArtifactStore(db),
                key=key,
                builder_id=builder_id(config.home),
                builder_version=builder_version(),
            )
            plugins = Plugins(hook_timeout=config.hook_timeout)
            await trio.to_thread.run_sync(plugins.load_entry_points)
            telemetry.runs.use_stage_kinds(plugins.stage_kinds)
            bus = EventBus()
            logs = LogStore(config.logs_dir)
            base_env = await trio.to_thread.run_sync(
                lambda: base_environment(
                    config.stage_env_passthrough, inherit_venv=config.stage_inherit_venv
                )
            )
            catalog = ArtifactCatalog(artifacts.store, key)
            delivery = DeliveryService(
                config=config,
                store=DeploymentStore(db),
                runs=store,
                catalog=catalog,
                targets=plugins.deploy_targets,
                finished=_deployment_finished(telemetry, plugins),
                owner=artifacts.builder_id,
                host_env=base_env,
                tracing=telemetry.deployments,
            )
            deps = RunDeps(
                config=config,
                journal=Journal(store, bus),
                logs=logs,
                plugins=plugins,
                base_env=base_env,
                tracing=telemetry.runs,
                artifacts=artifacts,
                delivery=delivery,
            )
            scheduler = Scheduler(deps)
            service = self.service = RunService(
                config=config,
                store=store,
                bus=bus,
                logs=logs,
                plugins=plugins,
                scheduler=scheduler,
                telemetry=telemetry,
                artifacts=catalog,
                delivery=delivery,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(plugins.notifier.serve)
                await nursery.start(delivery.serve)
                await nursery.start(scheduler.serve)
                if recovery is not None:
                    await _finish_recovery(service, recovery)
                else:
                    log.warning(
                        "the disk holding %s is full: start-up recovery waits for free"
                        " space; reads are served, new runs are refused until then",
                        config.home,
                    )
                    service.refusing_runs = WAITING_FOR_SPACE
                    nursery.start_soon(_recover_when_space, service, bus)
                async with trio.open_nursery() as streams:
                    bridge = TrioBridge(trio.lowlevel.current_trio_token(), streams)
                    server = ApiServer(config, service, bridge)
                    bound = await trio.to_thread.run_sync(server.start)
                    log.info("conveyord listening on %s", ", ".join(bound))
                    task_status.started(bound)
                    await self._wait_for_shutdown()
                    # One grace period for the whole shutdown: runs drain
                    # (shutdown_mode), then notifications get what is left.
                    deadline = trio.current_time() + config.shutdown_timeout
                    log.info("shutting down (%s runs in progress)", scheduler.active_runs)
                    # State writes waiting for space on a full disk wait no
                    # longer than the grace period; the next start-up
                    # records those runs as interrupted.
                    nursery.start_soon(_release_held_writes_at, db, deadline)
                    server.health.enter_graceful_shutdown()
                    await scheduler.drain(config.shutdown_mode, config.shutdown_timeout)
                    await trio.to_thread.run_sync(server.stop, 2.0)
                    streams.cancel_scope.cancel()
                await plugins.notifier.aclose(deadline)
                nursery.cancel_scope.cancel()
            timeout = config.telemetry_shutdown_timeout
            with trio.move_on_after(timeout + 1):
                await trio.to_thread.run_sync(telemetry.shutdown, timeout, abandon_on_cancel=True)
        finally:
            db.close()
        log.info("conveyord stopped")

    async def _wait_for_shutdown(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for signum in signals:
                        log.info("received %s", signal.Signals(signum).name)
                        self.shutdown_requested.set()
                        return

                nursery.start_soon(on_signal)
                await self.shutdown_requested.wait()
                nursery.cancel_scope.cancel()


def _deployment_finished(
    telemetry: Telemetry, plugins: Plugins
) -> Callable[[DeploymentRecord], None]:
    """What happens when a deployment ends: its span ends, it is counted,
    ``conveyor_deployment_finished`` is notified."""

    def finished(record: DeploymentRecord) -> None:
        telemetry.deployments.end(record)
        plugins.deployment_finished(record)

    return finished


async def _recover(store: RunStore) -> Recovery | None:
    """Record the runs a previous daemon left in flight as interrupted;
    None when the disk is too full to record it."""
    try:
        return await store.recover(INTERRUPTED_REASON)
    except sqlite3.Error as exc:
        if not out_of_space(exc):
            raise
        log.warning("cannot record the start-up recovery yet: %s", exc)
        return None


async def _finish_recovery(service: RunService, recovery: Recovery) -> None:
    """What follows a recorded recovery, before any run starts: remove the
    workspaces of finished (and unknown) runs, tell plugins about the
    interrupted runs, requeue the queued ones, oldest first."""
    removed = await service.remove_stale_workspaces()
    if removed:
        log.info("removed %d workspace folder(s) of finished runs", removed)
    await service.close_interrupted(recovery.interrupted)
    await service.resume_queued(recovery.queued)
    if recovery.queued:
        log.info("requeued %d run(s) acknowledged before the restart", len(recovery.queued))


async def _recover_when_space(service: RunService, bus: EventBus) -> None:
    """Start-up recovery on a full disk: free what finished runs' workspaces
    hold, wait until recovery can be recorded, finish it, then take new
    runs. Gives up (for the next start-up) if the daemon stops first."""
    await service.remove_stale_workspaces()
    try:
        recovery = await service.store.recover(INTERRUPTED_REASON, hold=True)
    except sqlite3.Error as exc:
        if not out_of_space(exc):
            raise
        log.warning("start-up recovery was not recorded (%s); the next start-up does it", exc)
        return
    log.info("recorded the start-up recovery now that space was freed")
    for run_id in recovery.interrupted:
        bus.publish(run_id)  # watchers that came meanwhile see the runs end
    await _finish_recovery(service, recovery)
    service.refusing_runs = ""


async def _release_held_writes_at(db: Database, deadline: float) -> None:
    await trio.sleep_until(deadline)
    db.release_held_writes()


class HomeInUse(Exception):
    pass


def _lock_home(home: Path) -> IO[str]:
    """Create the home folder and hold its lock for the daemon's lifetime:
    two daemons on one home would interrupt each other's runs."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = (home / "conveyord.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise HomeInUse(f"another conveyord (pid {holder}) is using {home}") from None
    try:
        # The pid is for people (and the message above): a full disk must
        # not stop the start-up for it.
        os.ftruncate(lock.fileno(), 0)
        os.pwrite(lock.fileno(), f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        log.warning("cannot write the pid into %s: %s", home / "conveyord.lock", exc)
    return lock
