"""The ``process`` target on real processes: a replica is started in a
session of its own with its environment, found again from its record,
stopped with its group; a command that cannot start is a TargetError."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conveyor.daemon.delivery.process import ProcessTarget
from conveyor.daemon.delivery.rolling import labels
from conveyor.daemon.delivery.target import (
    REPLICA_ROLLOUT,
    Environment,
    HealthCheck,
    ReplicaRequest,
    ReplicaTarget,
    TargetContext,
    TargetError,
)
from tests.unit.delivery.support import artifact, until


def environment(command: tuple[str, ...]) -> Environment:
    return Environment(
        name="staging",
        target="process",
        replicas=1,
        artifact=artifact(),
        command=command,
        config={"GREETING": "hi"},
        config_hash="sha256:x",
        port=8081,
        health=HealthCheck(path="/"),
        readiness_timeout=5,
        watch_window=0,
        stop_grace=1,
    )


def context(tmp_path: Path, owner: str = "conveyor://test") -> TargetContext:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return TargetContext(
        environment="staging",
        owner=owner,
        state_dir=state,
        stop_grace=1,
        host_env={"PATH": os.environ["PATH"]},
    )


def request(env: Environment, port: int = 40001) -> ReplicaRequest:
    return ReplicaRequest(
        environment=env,
        deployment_id="d1",
        port=port,
        env={"PORT": str(port), "GREETING": "hi"},
        labels=labels(env, "d1", "conveyor://test", port),
    )


async def test_a_replica_runs_in_its_own_session_and_is_found_and_stopped(tmp_path: Path) -> None:
    target = ProcessTarget()
    ctx = context(tmp_path)
    script = 'echo "$GREETING on $PORT"; trap "exit 0" TERM; while true; do sleep 0.05; done'
    replica = await target.start(ctx, request(environment(("sh", "-c", script))))
    pid = int(replica.id.split(":")[1])
    assert os.getsid(pid) == pid != os.getsid(0)  # not in the daemon's session
    assert await target.alive(ctx, replica)
    (found,) = await target.list_replicas(ctx, "staging")
    assert found.id == replica.id and found.port == 40001 and found.digest == artifact().digest
    assert found.state == "running"

    async def greeted() -> bool:
        return "hi on 40001" in await target.output_tail(ctx, replica)

    await until(greeted)
    assert await target.list_replicas(context(tmp_path, owner="someone else"), "staging") == []
    assert await target.list_replicas(ctx, "production") == []
    started = time.monotonic()
    await target.stop(ctx, replica, grace=5)
    assert time.monotonic() - started < 5  # it honoured SIGTERM
    assert not await target.alive(ctx, replica)
    assert await target.list_replicas(ctx, "staging") == []


async def test_a_replica_that_died_is_listed_as_stopped_with_its_output(tmp_path: Path) -> None:
    target = ProcessTarget()
    ctx = context(tmp_path)
    replica = await target.start(ctx, request(environment(("sh", "-c", "echo boom; exit 3"))))

    async def dead() -> bool:
        return not await target.alive(ctx, replica)

    await until(dead)
    (found,) = await target.list_replicas(ctx, "staging")
    assert found.state == "stopped" and "boom" in found.message
    await target.stop(ctx, found, grace=1)
    assert await target.list_replicas(ctx, "staging") == []


async def test_a_command_that_cannot_start_is_a_target_error(tmp_path: Path) -> None:
    target = ProcessTarget()
    with pytest.raises(TargetError, match="cannot start 'no-such-program-here'"):
        await target.start(context(tmp_path), request(environment(("no-such-program-here",))))
    assert list(target.validate({"network": "host"})) == [
        ("with.network", "unknown option 'network'; the process target takes none")
    ]


def test_the_process_target_follows_the_replica_contract() -> None:
    target: ReplicaTarget = ProcessTarget()  # checked by mypy against the protocol
    assert target.rollout == REPLICA_ROLLOUT and target.artifact_kinds == ("file",)
