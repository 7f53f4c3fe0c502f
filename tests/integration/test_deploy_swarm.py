"""The ``swarm`` deploy target on the real single-node swarm of this
machine: a service created, rolled (Swarm's stop-first update) and rolled
back, decided from task states."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import trio

from conveyor.plugin import LABEL_DEPLOYMENT, LABEL_ENVIRONMENT, LABEL_PORT, TargetError
from conveyor.plugins.targets.swarm import SwarmTarget
from tests.support import swarm as swarm_support
from tests.support.docker import DockerSandbox, docker_required
from tests.support.httpd import build_service_image, wait_version
from tests.support.targets import (
    Deployer,
    environment,
    free_slot_base,
    image_artifact,
    with_artifact,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="session")
def swarm(docker_engine: None) -> None:
    """The engine is a Swarm manager; otherwise the test is skipped with the
    reason, or fails when CONVEYOR_REQUIRE_DOCKER=1."""
    reason = swarm_support.unavailable()
    if reason is None:
        return
    if docker_required():
        pytest.fail(f"CONVEYOR_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def deployer(swarm: None, docker_sandbox: DockerSandbox, tmp_path: Path) -> Iterator[Deployer]:
    """A daemon identity for one test; its services (and their containers)
    are removed afterwards, before the sandbox removes its images."""
    deployer = Deployer(tmp_path)
    try:
        yield deployer
    finally:
        swarm_support.remove_services(deployer.owner)


def _task_env(task_id: str) -> list[str]:
    """The environment of a task's container, as the engine resolved it."""
    api = docker.APIClient()
    try:
        task = api.inspect_task(task_id)  # type: ignore[no-untyped-call]
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        env: list[str] = api.inspect_container(container)["Config"]["Env"]
        return env
    finally:
        api.close()


async def test_a_service_is_created_then_rolled_to_a_new_version(
    docker_sandbox: DockerSandbox, deployer: Deployer
) -> None:
    v1 = await trio.to_thread.run_sync(build_service_image, docker_sandbox, "1.0.0")
    v2 = await trio.to_thread.run_sync(build_service_image, docker_sandbox, "2.0.0")
    env = environment(
        image_artifact(v1, docker_sandbox.image()),
        target="swarm",
        replicas=2,
        config={"GREETING": "a {{.Node.ID}} b"},
        watch_window=1.0,
    )
    target = SwarmTarget()
    ctx = deployer.context()
    await target.check(ctx, env)
    base = free_slot_base(2)
    ports = [base * 10 + 1, base * 10 + 2]

    created = await target.update(ctx, deployer.service_request(env, base, "d1"))

    assert [(r.slot, r.port, r.state) for r in created] == [
        (1, ports[0], "running"),
        (2, ports[1], "running"),
    ]
    assert {(r.deployment_id, r.labels[LABEL_ENVIRONMENT]) for r in created} == {("d1", "staging")}
    assert created[0].labels[LABEL_PORT] == str(ports[0])
    for port in ports:
        await trio.to_thread.run_sync(wait_version, port, "1.0.0")
    task_env = _task_env(created[0].id)
    assert "GREETING=a {{.Node.ID}} b" in task_env and f"PORT={ports[0]}" in task_env
    assert swarm_support.services(deployer.owner)[0]["Spec"]["Labels"][LABEL_DEPLOYMENT] == "d1"

    rolled = await target.update(
        ctx, deployer.service_request(with_artifact(env, image_artifact(v2, "app")), base, "d2")
    )

    assert [(r.slot, r.port, r.state, r.deployment_id) for r in rolled] == [
        (1, ports[0], "running", "d2"),
        (2, ports[1], "running", "d2"),
    ]
    for port in ports:
        await trio.to_thread.run_sync(wait_version, port, "2.0.0")
    assert [r.id for r in await target.replicas(ctx, "staging")] == [r.id for r in rolled]
    # the same deployment again (a restarted daemon): nothing changes
    again = await target.update(
        ctx, deployer.service_request(with_artifact(env, image_artifact(v2, "app")), base, "d2")
    )
    assert [r.id for r in again] == [r.id for r in rolled]


async def test_a_task_that_fails_fails_the_update_at_once_and_a_new_update_restores(
    docker_sandbox: DockerSandbox, deployer: Deployer
) -> None:
    v1 = await trio.to_thread.run_sync(build_service_image, docker_sandbox, "1.0.0")
    crash = await trio.to_thread.run_sync(build_service_image, docker_sandbox, "3.0.0", "crash")
    env = environment(
        image_artifact(v1, docker_sandbox.image()), target="swarm", replicas=2, watch_window=1.0
    )
    target = SwarmTarget()
    ctx = deployer.context()
    base = free_slot_base(2)
    await target.update(ctx, deployer.service_request(env, base, "d1"))

    broken = with_artifact(env, image_artifact(crash, "crash"))
    failed = (
        r"replica [12] \(task .*\) failed: task: non-zero exit \(3\);"
        r" its last output: 3\.0\.0 cannot start"
    )
    with pytest.raises(TargetError, match=failed):
        await target.update(ctx, deployer.service_request(broken, base, "d2"))

    restored = await target.update(ctx, deployer.service_request(env, base, "d3"))
    assert [(r.slot, r.state, r.deployment_id) for r in restored] == [
        (1, "running", "d3"),
        (2, "running", "d3"),
    ]
    for port in (base * 10 + 1, base * 10 + 2):
        await trio.to_thread.run_sync(wait_version, port, "1.0.0")


async def test_no_service_no_replicas_and_a_missing_image_touches_nothing(
    docker_sandbox: DockerSandbox, deployer: Deployer
) -> None:
    target = SwarmTarget()
    ctx = deployer.context()
    assert await target.replicas(ctx, "staging") == []
    env = environment(image_artifact("sha256:" + "0" * 64, "gone"), target="swarm")
    with pytest.raises(TargetError, match="has no image"):
        await target.check(ctx, env)
    with pytest.raises(TargetError, match="has no image"):
        await target.update(ctx, deployer.service_request(env, free_slot_base(1), "d1"))
    assert swarm_support.services(deployer.owner) == []
