"""The scheduler and the run service wired as the daemon wires them
(``conveyor.daemon.app``), serving inside the test's trio run: for in-process
tests of what happens between a submit and a finished run, without a daemon
process or gRPC."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from conveyor.daemon.config import Config
from conveyor.daemon.events import EventBus
from conveyor.daemon.executors import local
from conveyor.daemon.logstore import LogStore
from conveyor.daemon.plugins import Plugins
from conveyor.daemon.scheduler import Journal, Scheduler
from conveyor.daemon.scheduler.runner import RunDeps
from conveyor.daemon.secrets.providers import Secrets
from conveyor.daemon.service import RunService
from conveyor.daemon.store import Database, RunStore
from conveyor.daemon.telemetry import Telemetry
from conveyor.plugins import run as run_kind


@dataclass
class InProcess:
    """What a test drives and looks into."""

    config: Config
    db: Database
    store: RunStore
    scheduler: Scheduler
    service: RunService


def plugins_with(**extra: object) -> Plugins:
    """The local executor and the ``run`` kind, plus ``extra`` plugins by name."""
    plugins = Plugins()
    plugins.register(local, "local")
    plugins.register(run_kind, "run")
    for name, plugin in extra.items():
        plugins.register(plugin, name)
    return plugins


@asynccontextmanager
async def serving(
    config: Config,
    plugins: Plugins,
    *,
    telemetry: Telemetry | None = None,
    base_env: Mapping[str, str] | None = None,
    secrets: Secrets | None = None,
    **deps: Any,
) -> AsyncIterator[InProcess]:
    """A serving scheduler behind a :class:`RunService` on ``config``'s home;
    stages get ``base_env`` (default: this process's ``PATH`` alone); ``deps``
    are further :class:`RunDeps` fields (``stage_user``, ``daemon_id``...).
    Stops the scheduler and closes the database on the way out."""
    db = await trio.to_thread.run_sync(Database, config.database_path)
    telemetry = telemetry or Telemetry(TracerProvider(), MeterProvider(), [], [])
    store = RunStore(db)
    bus = EventBus()
    logs = LogStore(config.logs_dir)
    if secrets is not None:
        deps["secrets"] = secrets
    scheduler = Scheduler(
        RunDeps(
            config=config,
            journal=Journal(store, bus),
            logs=logs,
            plugins=plugins,
            base_env=dict(base_env if base_env is not None else {"PATH": os.environ["PATH"]}),
            tracing=telemetry.runs,
            **deps,
        )
    )
    service = RunService(
        config=config,
        store=store,
        bus=bus,
        logs=logs,
        plugins=plugins,
        scheduler=scheduler,
        telemetry=telemetry,
        secrets=secrets,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.serve)
            yield InProcess(config, db, store, scheduler, service)
            nursery.cancel_scope.cancel()
    finally:
        db.close()
