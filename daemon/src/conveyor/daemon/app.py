"""Wires the daemon together and runs it until SIGTERM/SIGINT.

Start-up: open the store and close out runs a previous daemon left in
flight (recovery), stop their leftover processes, load plugins, let
executors remove their leftover containers and services, start the
plugins' notifier and the scheduler, remove the workspaces of finished runs
and requeue acknowledged runs that never started, then serve gRPC (and the
web dashboard, with ``web_listen``: its socket is bound before anything
else starts, so that run URLs can name its port). Every
step can be done again: a start-up killed half-way is finished by the next
one.

A full disk does not stop the start-up: the store opens without free space
(see :class:`~conveyor.daemon.store.Database`); if recovery cannot be
recorded, gRPC serves reads at once, new runs are refused, and recovery
finishes (requeueing included) as soon as space is freed.

SIGHUP reads the access file again (identities, roles, repository folders);
a file with a mistake is logged and the previous policy stays in force.

Shutdown (SIGTERM/SIGINT, or :attr:`Daemon.shutdown_requested`): health
turns NOT_SERVING and no run starts any more (runs submitted meanwhile are
stored as queued, for the next start-up); running runs are cancelled or
allowed to finish (``shutdown_mode``) and recorded as interrupted; state
writes waiting for disk space give up at the grace deadline; the
dashboard ends its live pages and stops; the gRPC server stops; plugins'
pending notifications are delivered for what is left of
``shutdown_timeout`` (counted from the signal), then cancelled; the store
closes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sqlite3
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO

import trio

from conveyor.daemon import vcs
from conveyor.daemon.api.bridge import TrioBridge
from conveyor.daemon.api.server import ApiServer
from conveyor.daemon.artifacts import signing
from conveyor.daemon.artifacts.catalog import ArtifactCatalog
from conveyor.daemon.artifacts.recorder import ArtifactDeps, builder_id, builder_version
from conveyor.daemon.auth.access import AccessControl
from conveyor.daemon.config import Config
from conveyor.daemon.delivery.environments import secrets_resolver
from conveyor.daemon.delivery.records import DeploymentRecord
from conveyor.daemon.delivery.service import DeliveryService
from conveyor.daemon.events import EventBus
from conveyor.daemon.executors import stage_user
from conveyor.daemon.executors.base import StageUser
from conveyor.daemon.executors.process import kill_leftover_processes, stage_marker
from conveyor.daemon.executors.stage_user import StageUserError
from conveyor.daemon.logstore import LogStore
from conveyor.daemon.memory import IdleRelease, release_memory
from conveyor.daemon.plugins import Plugins
from conveyor.daemon.scheduler import Journal, Scheduler
from conveyor.daemon.scheduler.runner import RunDeps, base_environment
from conveyor.daemon.secrets.providers import Secrets
from conveyor.daemon.secrets.store import KEY_VARIABLE, SECRETS_FILE
from conveyor.daemon.service import RunService
from conveyor.daemon.spare_workspaces import SPARE_FOLDER, SpareWorkspaces
from conveyor.daemon.store import ArtifactStore, Database, RunStore
from conveyor.daemon.store.database import out_of_space
from conveyor.daemon.store.deployments import DeploymentStore
from conveyor.daemon.store.runs import Recovery
from conveyor.daemon.telemetry import Telemetry
from conveyor.daemon.telemetry import configure as configure_telemetry
from conveyor.daemon.web.server import WebListener

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
        self.access: AccessControl | None = None

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
        user = await trio.to_thread.run_sync(_stage_user, config)
        await trio.to_thread.run_sync(secure_home, config, user)
        secrets = Secrets(
            file=config.home / SECRETS_FILE,
            key_file=config.secrets_key_file,
            from_env=config.secrets_from_env,
            environ=os.environ,
        )
        # The key and the secrets stay in memory only: no process the daemon
        # starts (git, tools of plugins) inherits them.
        for name in (KEY_VARIABLE, *config.secrets_from_env):
            os.environ.pop(name, None)
        await trio.to_thread.run_sync(secrets.load)
        db = await trio.to_thread.run_sync(Database, config.database_path)
        web: WebListener | None = None
        try:
            store = RunStore(db)
            recovery = await _recover(store)
            marker = await trio.to_thread.run_sync(stage_marker, config.home)
            killed = await trio.to_thread.run_sync(kill_leftover_processes, marker)
            if killed:
                log.warning("stopped %d process(es) left behind by the previous daemon", killed)
            # bound first, so that run URLs can name the dashboard's port
            if config.web_listen:
                web = await trio.to_thread.run_sync(WebListener.bind, config.web_listen)
            telemetry = configure_telemetry(
                exporter=config.telemetry_exporter,
                endpoint=config.otlp_endpoint,
                home=config.home,
                dora_window=config.dora_window_days * 86400.0,
                web_url=web.url if web is not None else "",
            )
            key = await trio.to_thread.run_sync(signing.load_or_create, config.home)
            artifacts = ArtifactDeps(
                store=ArtifactStore(db),
                key=key,
                builder_id=builder_id(config.home),
                builder_version=builder_version(),
            )
            plugins = Plugins(hook_timeout=config.hook_timeout, settings=config.plugin_settings)
            await trio.to_thread.run_sync(plugins.load_entry_points)
            # Containers and services of interrupted runs (no run is live yet).
            await plugins.cleanup_executors(artifacts.builder_id)
            telemetry.runs.use_stage_kinds(plugins.stage_kinds)
            bus = EventBus()
            logs = LogStore(config.logs_dir)
            base_env = await trio.to_thread.run_sync(
                lambda: base_environment(
                    config.stage_env_passthrough, inherit_venv=config.stage_inherit_venv
                )
            )
            for name in sorted(set(config.stage_env_passthrough) & set(config.secrets_from_env)):
                log.warning(
                    "%s is in stage_env_passthrough and secrets_from_env: it is not passed"
                    " through; stages that need it ask for it with secrets: [%s]",
                    name,
                    name,
                )
            catalog = ArtifactCatalog(artifacts.store, key)
            deployments = DeploymentStore(db)
            delivery = DeliveryService(
                config=config,
                store=deployments,
                runs=store,
                catalog=catalog,
                targets=plugins.deploy_targets,
                finished=_deployment_finished(telemetry, plugins),
                owner=artifacts.builder_id,
                host_env=base_env,
                tracing=telemetry.deployments,
                secrets=secrets_resolver(secrets.values),
            )
            spares = SpareWorkspaces(config.workspaces_dir / SPARE_FOLDER)
            await trio.to_thread.run_sync(spares.reset)
            git_readers = vcs.CatFiles()
            deps = RunDeps(
                config=config,
                journal=Journal(store, bus),
                logs=logs,
                plugins=plugins,
                base_env=base_env,
                tracing=telemetry.runs,
                artifacts=artifacts,
                secrets=secrets,
                stage_user=user,
                delivery=delivery,
                daemon_id=artifacts.builder_id,
                spares=spares,
                git_readers=git_readers,
            )
            scheduler = Scheduler(deps)
            release = IdleRelease(partial(release_memory, db.shrink_memory), lambda: scheduler.idle)
            scheduler.on_idle = release.went_idle
            access = self.access = await AccessControl.open(
                db,
                enabled=config.auth,
                locate_policy=lambda: config.access_path,
                client_certificates=bool(config.tls_client_ca_file),
            )
            service = self.service = RunService(
                config=config,
                store=store,
                bus=bus,
                logs=logs,
                plugins=plugins,
                scheduler=scheduler,
                telemetry=telemetry,
                artifacts=catalog,
                secrets=secrets,
                delivery=delivery,
                git_readers=git_readers,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(secrets.watch)
                await nursery.start(plugins.notifier.serve)
                await nursery.start(delivery.serve)
                await nursery.start(telemetry.dora.serve, deployments)
                await nursery.start(scheduler.serve)
                await nursery.start(release.serve)
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
                    dashboard = web.app(service, access) if web is not None else None
                    server = ApiServer(
                        config,
                        service,
                        bridge,
                        access,
                        web_login=dashboard.login_link if dashboard is not None else None,
                        web_url=web.url if web is not None else "",
                    )
                    bound = await trio.to_thread.run_sync(server.start)
                    await server.serve_relays(streams)
                    log.info("conveyord listening on %s", ", ".join(bound))
                    if web is not None:
                        await streams.start(web.serve)
                        log.info("dashboard on %s", web.url)
                    if not config.auth:
                        log.warning("authentication is off (auth = false): every caller is admin")
                    task_status.started(bound)
                    await self._wait_for_shutdown(server)
                    # One grace period for the whole shutdown: runs drain
                    # (shutdown_mode), then notifications get what is left.
                    deadline = trio.current_time() + config.shutdown_timeout
                    log.info("shutting down (%s runs in progress)", scheduler.active_runs)
                    # State writes waiting for space on a full disk wait no
                    # longer than the grace period; the next start-up
                    # records those runs as interrupted.
                    nursery.start_soon(_release_held_writes_at, db, deadline)
                    server.enter_graceful_shutdown()
                    await scheduler.drain(config.shutdown_mode, config.shutdown_timeout)
                    if web is not None:
                        web.stop()
                    await trio.to_thread.run_sync(server.stop, 2.0)
                    if web is not None:
                        await web.stopped()
                    streams.cancel_scope.cancel()
                await plugins.notifier.aclose(deadline)
                await service.aclose()
                nursery.cancel_scope.cancel()
            timeout = config.telemetry_shutdown_timeout
            with trio.move_on_after(timeout + 1):
                await trio.to_thread.run_sync(telemetry.shutdown, timeout, abandon_on_cancel=True)
        finally:
            if web is not None:
                web.close()
            db.close()
        log.info("conveyord stopped")

    async def _wait_for_shutdown(self, server: ApiServer) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for signum in signals:
                        log.info("received %s", signal.Signals(signum).name)
                        if signum == signal.SIGHUP:
                            # the access file; TLS files are re-read when they change
                            await server.access.reload_policy()
                            if server.certificates is not None:
                                server.certificates.force_reload()
                            continue
                        self.shutdown_requested.set()
                        return

                nursery.start_soon(on_signal)
                await self.shutdown_requested.wait()
                nursery.cancel_scope.cancel()


def _deployment_finished(
    telemetry: Telemetry, plugins: Plugins
) -> Callable[[DeploymentRecord], None]:
    """What happens when a deployment ends: its span ends, it is counted,
    the DORA figures are computed again, ``conveyor_deployment_finished`` is
    notified."""

    def finished(record: DeploymentRecord) -> None:
        telemetry.deployments.end(record)
        telemetry.dora.changed()
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
    fd = os.open(home / "conveyord.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    lock = os.fdopen(fd, "a+")
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


def _stage_user(config: Config) -> StageUser | None:
    """The user stages run as (blocking: reads the user database). Raises
    :class:`StageUserError` when ``stage_user`` names no usable user, or
    the daemon is not root and so cannot switch to it."""
    if not config.stage_user:
        if os.geteuid() == 0:
            log.warning(
                "conveyord runs as root and stage_user is not set: stages run as root, with"
                " every capability, and can read the database, logs and keys; set stage_user"
                " (see docs/security.md)"
            )
        return None
    user = stage_user.resolve(config.stage_user)
    if os.geteuid() != 0:
        raise StageUserError(
            f"stage_user is {config.stage_user!r} but conveyord runs as uid {os.geteuid()}:"
            " only root can run stages as another user; unset stage_user, or run as root"
        )
    return user


def secure_home(config: Config, user: StageUser | None) -> None:
    """Check and set the modes of the home and what is in it (blocking).

    Warns when the home is readable or writable by its group or others.
    The database, logs and workspaces folders are made (or made again)
    0600/0700; with a stage user, the home and ``workspaces/`` are 0711, so
    the stage user reaches its workspace and nothing else. Raises
    :class:`StageUserError` when a folder above the home stops it.
    """
    home = config.home
    mode = stat.S_IMODE(home.stat().st_mode)
    if mode & 0o066:
        log.warning(
            "the home %s is readable or writable by others (mode %o): anyone who can read it"
            " reads the database and logs; chmod 700 it",
            home,
            mode,
        )
    if config.secrets_key_file.is_relative_to(home):
        log.warning(
            "secrets_key_file %s is inside the home: a copy of the home (a backup) holds the"
            " secrets and their key; keep the key elsewhere",
            config.secrets_key_file,
        )
    database = config.database_path
    with contextlib.suppress(FileExistsError):  # made 0600 before SQLite makes it 0644
        os.close(os.open(database, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    for name in (database.name, f"{database.name}-wal", f"{database.name}-shm"):
        path = home / name
        with contextlib.suppress(FileNotFoundError):
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
                path.chmod(0o600)
    config.logs_dir.mkdir(mode=0o700, exist_ok=True)
    config.logs_dir.chmod(0o700)
    workspaces = config.workspaces_dir
    workspaces.mkdir(mode=0o700, exist_ok=True)
    if user is None:
        return
    if mode & 0o011 != 0o011:
        home.chmod(mode | 0o011)
    workspaces.chmod(stage_user.TRAVERSE_MODE)
    blocked = stage_user.unreachable(workspaces, user)
    if blocked is not None:
        raise StageUserError(
            f"stage_user {user.name} cannot reach its workspaces in {workspaces}: {blocked}"
            f" is mode {stat.S_IMODE(blocked.stat().st_mode):o}, owned by uid"
            f" {blocked.stat().st_uid}; let others pass through it (chmod o+x) or move the"
            " home"
        )
