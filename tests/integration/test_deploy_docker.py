"""The ``docker`` deploy target against the real Docker engine: its
primitives in-process (start, stop, alive, list, check, cancellation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import trio

from conveyor.plugin import LABEL_DIGEST, LABEL_ENVIRONMENT, LABEL_OWNER, LABEL_PORT, TargetError
from conveyor.plugins.targets.docker import DockerTarget
from tests.support.docker import DockerSandbox, free_port
from tests.support.httpd import build_service_image, get, wait_version
from tests.support.targets import Deployer, environment, image_artifact

pytestmark = pytest.mark.docker


@pytest.fixture
def deployer(docker_sandbox: DockerSandbox, tmp_path: Path) -> Iterator[Deployer]:
    """A daemon identity for one test; every container it labelled is
    removed afterwards."""
    deployer = Deployer(tmp_path)
    try:
        yield deployer
    finally:
        api = docker.APIClient()
        try:
            for c in api.containers(all=True, filters={"label": f"{LABEL_OWNER}={deployer.owner}"}):
                api.remove_container(c["Id"], force=True)
        finally:
            api.close()


def _inspect(container: str) -> dict[str, object]:
    api = docker.APIClient()
    try:
        details: dict[str, object] = api.inspect_container(container)
        return details
    finally:
        api.close()


def _containers(owner: str) -> list[str]:
    api = docker.APIClient()
    try:
        return [
            c["Id"] for c in api.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
        ]
    finally:
        api.close()


async def test_a_replica_runs_labelled_with_its_config_and_stops_removed(
    docker_sandbox: DockerSandbox, deployer: Deployer
) -> None:
    image = await trio.to_thread.run_sync(build_service_image, docker_sandbox, "1.0.0")
    env = environment(image_artifact(image, docker_sandbox.image()), config={"GREETING": "hi"})
    target = DockerTarget()
    ctx = deployer.context()
    await target.check(ctx, env)
    port = free_port()

    replica = await target.start(ctx, deployer.replica_request(env, port, "d1"))

    await trio.to_thread.run_sync(wait_version, port, "1.0.0")
    assert await target.alive(ctx, replica)
    details = _inspect(replica.id)
    config = details["Config"]
    assert isinstance(config, dict)
    assert "GREETING=hi" in config["Env"] and f"PORT={port}" in config["Env"]
    assert config["Labels"][LABEL_ENVIRONMENT] == "staging"
    assert config["Labels"][LABEL_DIGEST] == image
    assert config["Labels"][LABEL_PORT] == str(port)
    host = details["HostConfig"]
    assert isinstance(host, dict)
    assert host["NetworkMode"] == "host" and host["Init"] is True
    listed = await target.list_replicas(ctx, "staging")
    assert [(r.id, r.port, r.state) for r in listed] == [(replica.id, port, "running")]
    assert listed[0].deployment_id == "d1" and listed[0].digest == image

    await target.stop(ctx, replica, grace=5)

    assert not await target.alive(ctx, replica)
    assert await target.list_replicas(ctx, "staging") == []
    assert _containers(deployer.owner) == []
    with pytest.raises(OSError):
        get(port, "/version")
    await target.stop(ctx, replica, grace=5)  # already gone: not an error


async def test_list_replicas_sees_only_its_environment_and_owner(
    docker_sandbox: DockerSandbox, deployer: Deployer, tmp_path: Path
) -> None:
    image = await trio.to_thread.run_sync(build_service_image, docker_sandbox, "1.0.0")
    artifact = image_artifact(image, docker_sandbox.image())
    target = DockerTarget()
    other = Deployer(tmp_path)
    staging = environment(artifact, name="staging")
    production = environment(artifact, name="production")
    ctx = deployer.context()
    mine = await target.start(ctx, deployer.replica_request(staging, free_port(), "a"))
    elsewhere = deployer.replica_request(production, free_port(), "b")
    await target.start(deployer.context("production"), elsewhere)
    theirs = await target.start(other.context(), other.replica_request(staging, free_port(), "c"))
    try:
        listed = await target.list_replicas(ctx, "staging")
        assert [r.id for r in listed] == [mine.id]
    finally:
        await target.stop(other.context(), theirs, grace=1)


async def test_a_replica_that_exits_is_not_alive_and_listed_as_failed(
    docker_sandbox: DockerSandbox, deployer: Deployer
) -> None:
    image = await trio.to_thread.run_sync(build_service_image, docker_sandbox, "1.0.0")
    env = environment(image_artifact(image, docker_sandbox.image()))
    target = DockerTarget()
    ctx = deployer.context()
    # the same port twice: the second httpd cannot bind and exits
    port = free_port()
    first = await target.start(ctx, deployer.replica_request(env, port, "d1"))
    await trio.to_thread.run_sync(wait_version, port, "1.0.0")
    second = await target.start(ctx, deployer.replica_request(env, port, "d2"))
    with trio.fail_after(20):
        while await target.alive(ctx, second):  # noqa: ASYNC110 (the engine has no event)
            await trio.sleep(0.05)
    states = {r.id: (r.state, r.message) for r in await target.list_replicas(ctx, "staging")}
    assert states[first.id] == ("running", "")
    assert states[second.id][0] == "failed" and "exit code 1" in states[second.id][1]
    assert "Address already in use" in await target.output_tail(ctx, second)


async def test_a_missing_image_is_a_target_error_and_starts_nothing(
    docker_sandbox: DockerSandbox, deployer: Deployer
) -> None:
    missing = "sha256:" + "0" * 64
    env = environment(image_artifact(missing, docker_sandbox.image()))
    target = DockerTarget()
    ctx = deployer.context()
    with pytest.raises(TargetError, match=r"has no image sha256:0000.*never pulled"):
        await target.check(ctx, env)
    with pytest.raises(TargetError, match="has no image"):
        await target.start(ctx, deployer.replica_request(env, free_port(), "d1"))
    assert _containers(deployer.owner) == []


async def test_a_start_cancelled_after_the_container_started_leaves_nothing(
    docker_sandbox: DockerSandbox, deployer: Deployer
) -> None:
    image = await trio.to_thread.run_sync(build_service_image, docker_sandbox, "1.0.0")
    env = environment(image_artifact(image, docker_sandbox.image()))
    target = DockerTarget()
    started = trio.Event()

    async def hang(text: str) -> None:  # the log line after the start
        started.set()
        await trio.sleep_forever()

    ctx = deployer.context()
    ctx = type(ctx)(**{**ctx.__dict__, "log_line": hang})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(target.start, ctx, deployer.replica_request(env, free_port(), "d1"))
        await started.wait()
        assert len(_containers(deployer.owner)) == 1
        nursery.cancel_scope.cancel()
    assert _containers(deployer.owner) == []


async def test_stop_kills_a_replica_that_ignores_the_stop_signal_after_the_grace(
    docker_sandbox: DockerSandbox, deployer: Deployer
) -> None:
    image = await trio.to_thread.run_sync(build_service_image, docker_sandbox, "1.0.0")
    # without an init, httpd is PID 1 and ignores SIGTERM
    env = environment(image_artifact(image, docker_sandbox.image()), options={"init": False})
    target = DockerTarget()
    ctx = deployer.context()
    port = free_port()
    replica = await target.start(ctx, deployer.replica_request(env, port, "d1"))
    await trio.to_thread.run_sync(wait_version, port, "1.0.0")
    await target.stop(ctx, replica, grace=1)
    assert _containers(deployer.owner) == []
