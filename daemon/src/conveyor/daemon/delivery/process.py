"""The ``process`` deploy target: each replica a local process, started
from the environment's ``run:`` command (``{artifact}`` is the artifact's
file in the daemon's store), listening on 127.0.0.1 at the port in
``$PORT``. It is the embedded default and works without Docker.

A replica is started in a session of its own and adopted by init
(:func:`~conveyor.plugin.spawn_detached`), so it keeps serving while the
daemon restarts; its output goes to a file in the target's state folder,
and a record beside it (pid, start time, port, labels) is how ``list_replicas``
finds it again. Registered as a plugin through the ``conveyor`` entry-point
group like any other target, written against :mod:`conveyor.plugin` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import trio

from conveyor.plugin import (
    FILE,
    LABEL_ENVIRONMENT,
    LABEL_OWNER,
    REPLICA_ROLLOUT,
    DeployTarget,
    DetachedProcess,
    Replica,
    ReplicaRequest,
    SpawnError,
    TargetContext,
    TargetError,
    hookimpl,
    is_running,
    spawn_detached,
    stop_detached,
)

#: Lines of a replica's output quoted when it failed to start.
TAIL_LINES = 5


def _records(ctx: TargetContext) -> Path:
    return ctx.state_dir / "replicas"


def _logs(ctx: TargetContext) -> Path:
    return ctx.state_dir / "logs"


def _process_of(replica: Replica) -> DetachedProcess:
    """``pid:<pid>:<start time>`` back to the process."""
    _, pid, started = replica.id.split(":")
    return DetachedProcess(int(pid), int(started))


def _write_record(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


def _read_records(folder: Path) -> list[dict[str, Any]]:
    records = []
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            records.append(data)
    return records


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


class ProcessTarget:
    name = "process"
    description = "Each replica a supervised local process (no Docker needed)"
    rollout = REPLICA_ROLLOUT
    artifact_kinds = (FILE,)
    requires_command = True

    def validate(self, options: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
        for key in options:
            yield f"with.{key}", f"unknown option '{key}'; the process target takes none"

    async def start(self, ctx: TargetContext, request: ReplicaRequest) -> Replica:
        command = list(request.environment.command)
        if not command:
            raise TargetError("the process target needs the service command ('run:')")
        workdir = ctx.state_dir / "run"
        log = _logs(ctx) / f"{request.deployment_id}-{request.port}.log"

        def prepare() -> None:
            workdir.mkdir(parents=True, exist_ok=True)
            log.parent.mkdir(parents=True, exist_ok=True)

        await trio.to_thread.run_sync(prepare)
        # Started and recorded together: a cancelled start leaves no
        # replica the next list_replicas cannot find.
        with trio.CancelScope(shield=True):
            try:
                process = await spawn_detached(
                    command, env={**ctx.host_env, **request.env}, cwd=workdir, log=log
                )
            except SpawnError as exc:
                raise TargetError(str(exc)) from None
            replica = Replica(
                id=f"pid:{process.pid}:{process.start_time}",
                port=request.port,
                labels=dict(request.labels),
                started_at=time.time(),
            )
            record = {
                "id": replica.id,
                "port": replica.port,
                "labels": dict(replica.labels),
                "started_at": replica.started_at,
                "log": str(log),
            }
            path = _records(ctx) / f"{process.pid}.json"
            await trio.to_thread.run_sync(_write_record, path, record)
        await ctx.log(f"started pid {process.pid} on port {request.port}: {' '.join(command)}")
        return replica

    async def stop(self, ctx: TargetContext, replica: Replica, grace: float) -> None:
        process = _process_of(replica)
        await stop_detached(process, grace)
        path = _records(ctx) / f"{process.pid}.json"

        def forget() -> None:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                return
            if data.get("id") != replica.id:
                return  # a newer replica with the same pid
            with contextlib.suppress(OSError):
                Path(str(data.get("log", ""))).unlink()
            path.unlink(missing_ok=True)

        await trio.to_thread.run_sync(forget)

    async def alive(self, ctx: TargetContext, replica: Replica) -> bool:
        return await trio.to_thread.run_sync(is_running, _process_of(replica))

    async def list_replicas(self, ctx: TargetContext, environment: str) -> list[Replica]:
        def scan() -> list[Replica]:
            found = []
            for data in _read_records(_records(ctx)):
                labels = {str(k): str(v) for k, v in dict(data.get("labels", {})).items()}
                if labels.get(LABEL_OWNER) != ctx.owner:
                    continue
                if labels.get(LABEL_ENVIRONMENT) != environment:
                    continue
                replica = Replica(
                    id=str(data["id"]),
                    port=int(data["port"]),
                    labels=labels,
                    started_at=float(data.get("started_at", 0)),
                )
                if not is_running(_process_of(replica)):
                    tail = _tail(Path(str(data.get("log", ""))))
                    replica = Replica(
                        replica.id,
                        replica.port,
                        labels,
                        replica.started_at,
                        state="stopped",
                        message=f"not running; last output: {tail}" if tail else "not running",
                    )
                found.append(replica)
            return found

        return await trio.to_thread.run_sync(scan)

    async def output_tail(self, ctx: TargetContext, replica: Replica) -> str:
        """The last lines a replica wrote, quoted in the deployment log when
        it fails to become healthy."""
        path = _records(ctx) / f"{_process_of(replica).pid}.json"

        def read() -> str:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                return ""
            return _tail(Path(str(data.get("log", ""))))

        return await trio.to_thread.run_sync(read)


@hookimpl
def conveyor_deploy_targets() -> list[DeployTarget]:
    return [ProcessTarget()]
