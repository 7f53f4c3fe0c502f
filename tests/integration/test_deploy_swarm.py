"""The ``swarm`` deploy target on the real single-node swarm of this
machine: a service created, rolled (Swarm's stop-first update) and rolled
back, decided from task states; then through a real daemon, with a poller
on the front port counting the failed requests and the outage (reported,
not asserted: Swarm's stop-first update may cost some)."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import trio

from conveyor.plugin import LABEL_DEPLOYMENT, LABEL_ENVIRONMENT, LABEL_PORT, TargetError
from conveyor.plugins.targets.swarm import SwarmTarget
from conveyor.v1 import delivery_pb2
from tests.support import swarm as swarm_support
from tests.support.daemon import DaemonProcess
from tests.support.docker import DockerSandbox, docker_required
from tests.support.httpd import (
    Health,
    Poller,
    build_service_image,
    service_dockerfile,
    wait_version,
)
from tests.support.ports import free_port
from tests.support.repos import make_repo
from tests.support.targets import (
    Deployer,
    built_image,
    deploy,
    environment,
    finished,
    free_slot_base,
    get_deployment,
    get_environment,
    image_artifact,
    owner_of,
    stop_processes_of,
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

    # StopEnvironment: the service is removed and its containers are gone
    assert await target.remove(ctx, "staging") == 2
    assert swarm_support.services(deployer.owner) == []
    assert await target.replicas(ctx, "staging") == []
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert await target.remove(ctx, "staging") == 0


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


# -- through a real daemon ---------------------------------------------------------------


S = delivery_pb2


def swarm_pipeline(image: str, port: int, *, watch: str = "1s") -> str:
    return (
        "name: shop\nversion: 1.0.0\nstages:\n  image:\n    uses: build\n"
        f"    with: {{image: {image}}}\n"
        "environments:\n  staging:\n"
        "    target: swarm\n"
        f"    port: {port}\n"
        "    replicas: 2\n"
        "    config: {GREETING: hello from staging}\n"
        "    health: {path: /health, interval: 0.05, timeout: 1, failure_threshold: 2}\n"
        "    readiness_timeout: 30\n"
        f"    watch: {watch}\n"
        "    stop_grace: 2\n"
    )


@pytest.fixture
def conveyord(swarm: None, docker_sandbox: DockerSandbox) -> Iterator[DaemonProcess]:
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    daemon = DaemonProcess(home, args=["--kill-grace", "1"]).start()
    try:
        yield daemon
    finally:
        daemon.stop()
        stop_processes_of(home)
        swarm_support.remove_services(owner_of(home))
        shutil.rmtree(home, ignore_errors=True)


def test_a_swarm_environment_rolls_and_rolls_a_broken_version_back(
    conveyord: DaemonProcess,
    docker_sandbox: DockerSandbox,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    port = free_port()
    repo = make_repo(tmp_path / "shop", {"README": "a shop\n"})

    def release(version: str, health: Health = "ok") -> str:
        repo.commit(
            {
                "Dockerfile": service_dockerfile(docker_sandbox, version, health),
                "conveyor.yaml": swarm_pipeline(docker_sandbox.image(), port),
            },
            f"release {version}",
        )
        return built_image(conveyord, repo.path)

    v1 = release("1.0.0")
    first = finished(conveyord, deploy(conveyord, "staging", v1).id)
    assert first.status == S.DEPLOYMENT_STATUS_HEALTHY, first.reason
    wait_version(port, "1.0.0")
    ports = sorted(r.port for r in get_environment(conveyord, "staging").replicas)
    assert len(ports) == 2

    v2 = release("2.0.0")
    with Poller(port) as rolling:
        rolled = finished(conveyord, deploy(conveyord, "staging", v2).id)
        wait_version(port, "2.0.0")
    assert rolled.status == S.DEPLOYMENT_STATUS_HEALTHY, rolled.reason
    environment = get_environment(conveyord, "staging")
    assert environment.healthy, environment.health_detail
    # each task was replaced on its own port: the front proxy served from the other
    assert sorted(r.port for r in environment.replicas) == ports
    assert {r.digest for r in environment.replicas} == {v2}

    v3 = release("3.0.0", "missing")
    with Poller(port) as rollback:
        broken = finished(conveyord, deploy(conveyord, "staging", v3).id)
        wait_version(port, "2.0.0")
    assert broken.status == S.DEPLOYMENT_STATUS_ROLLED_BACK, broken.reason
    restore = get_deployment(conveyord, broken.restored_by)
    assert restore.status == S.DEPLOYMENT_STATUS_HEALTHY and restore.digest == v2
    environment = get_environment(conveyord, "staging")
    assert environment.healthy, environment.health_detail
    assert {(r.state, r.digest) for r in environment.replicas} == {("running", v2)}

    # Swarm's stop-first update: reported, not asserted (see docs/delivery.md)
    for name, poller in (("roll", rolling), ("rollback", rollback)):
        record_property(f"{name}_failed_requests", poller.failed)
        record_property(f"{name}_longest_outage_s", round(poller.longest_outage, 3))
        print(f"swarm {name}: {poller.summary()}")
