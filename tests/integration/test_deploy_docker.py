"""The ``docker`` deploy target against the real Docker engine: its
primitives in-process (start, stop, alive, list, check, cancellation), then
through a real daemon: images built by a pipeline, deployed, rolled,
rolled back and promoted with two replicas behind the front proxy while a
poller counts failed requests, and a daemon killed mid-rollout."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import trio

from conveyor.plugin import (
    LABEL_DEPLOYMENT,
    LABEL_DIGEST,
    LABEL_ENVIRONMENT,
    LABEL_OWNER,
    LABEL_PORT,
    TargetError,
)
from conveyor.plugins.targets.docker import DockerTarget
from conveyor.v1 import delivery_pb2
from tests.support.daemon import DaemonProcess
from tests.support.docker import DockerSandbox
from tests.support.httpd import (
    Health,
    Poller,
    build_service_image,
    get,
    service_dockerfile,
    wait_version,
)
from tests.support.ports import free_port
from tests.support.repos import GitRepo, make_repo
from tests.support.targets import (
    Deployer,
    built_image,
    deploy,
    environment,
    finished,
    get_deployment,
    get_environment,
    image_artifact,
    labelled_containers,
    owner_of,
    remove_containers,
    stop_processes_of,
    wait_logged,
)

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


# -- through a real daemon ---------------------------------------------------------------


S = delivery_pb2


def shop_pipeline(image: str, staging: int, production: int, *, watch: str = "0.5s") -> str:
    """A pipeline building the service image, with staging and production
    environments on the docker target (different configuration)."""
    environment = """\
    target: docker
    port: {port}
    replicas: 2
    config: {{GREETING: {greeting}}}
    health: {{path: /health, interval: 0.05, timeout: 1, failure_threshold: 2}}
    readiness_timeout: 20
    watch: {watch}
    stop_grace: 2
"""
    return (
        "name: shop\nversion: 1.0.0\nstages:\n  image:\n    uses: build\n"
        f"    with: {{image: {image}}}\n"
        "environments:\n  staging:\n"
        + environment.format(port=staging, greeting="hello from staging", watch=watch)
        + "  production:\n"
        + environment.format(port=production, greeting="hello from production", watch=watch)
        + "    promote_from: staging\n"
    )


@dataclass
class Shop:
    daemon: DaemonProcess
    repo: GitRepo
    sandbox: DockerSandbox
    staging: int
    production: int

    @property
    def owner(self) -> str:
        return owner_of(self.daemon.home)

    def release(self, version: str, health: Health = "ok", watch: str = "0.5s") -> str:
        """Commit a version of the service (and the pipeline); build it: its digest."""
        self.repo.commit(
            {
                "Dockerfile": service_dockerfile(self.sandbox, version, health),
                "conveyor.yaml": shop_pipeline(
                    self.sandbox.image(), self.staging, self.production, watch=watch
                ),
            },
            f"release {version}",
        )
        return built_image(self.daemon, self.repo.path)

    def containers(self, environment: str = "staging") -> list[dict[str, Any]]:
        return labelled_containers(self.owner, environment)


@pytest.fixture
def shop(docker_sandbox: DockerSandbox, tmp_path: Path) -> Iterator[Shop]:
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    repo = make_repo(tmp_path / "shop", {"README": "a shop\n"})
    daemon = DaemonProcess(home, args=["--kill-grace", "1"]).start()
    shop = Shop(daemon, repo, docker_sandbox, free_port(), free_port())
    try:
        yield shop
    finally:
        daemon.stop()
        stop_processes_of(home)
        remove_containers(owner_of(home))
        shutil.rmtree(home, ignore_errors=True)


def healthy(daemon: DaemonProcess, deployment: delivery_pb2.Deployment) -> delivery_pb2.Deployment:
    final = finished(daemon, deployment.id)
    assert final.status == S.DEPLOYMENT_STATUS_HEALTHY, (
        final.reason,
        [e.message for e in final.events],
    )
    return final


def settled(daemon: DaemonProcess, name: str, timeout: float = 60) -> delivery_pb2.Environment:
    """The environment once no rollout or recovery works on it."""
    deadline = time.monotonic() + timeout
    while (found := get_environment(daemon, name)).busy:
        assert time.monotonic() < deadline, f"{name} still busy: {found.busy}"
        time.sleep(0.05)
    return found


def _env(details: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in details["Config"]["Env"])


def test_a_docker_environment_rolls_to_a_new_version_without_a_failed_request_and_promotes(
    shop: Shop,
) -> None:
    v1 = shop.release("1.0.0")
    healthy(shop.daemon, deploy(shop.daemon, "staging", v1))
    wait_version(shop.staging, "1.0.0")
    first = {c["Id"] for c in shop.containers()}
    assert len(first) == 2

    v2 = shop.release("2.0.0")
    with Poller(shop.staging) as poller:
        rolled = healthy(shop.daemon, deploy(shop.daemon, "staging", v2))
        wait_version(shop.staging, "2.0.0")
    assert poller.failed == 0, poller.summary()
    assert set(poller.versions) == {"1.0.0", "2.0.0"}, poller.summary()

    containers = shop.containers()
    assert {c["Id"] for c in containers} & first == set()  # the old ones are removed
    assert [(c["State"]["Status"], c["Config"]["Labels"][LABEL_DIGEST]) for c in containers] == [
        ("running", v2),
        ("running", v2),
    ]
    assert {c["Config"]["Labels"][LABEL_DEPLOYMENT] for c in containers} == {rolled.id}
    assert {c["HostConfig"]["NetworkMode"] for c in containers} == {"host"}

    promoted = shop.daemon.stub.Promote(
        S.PromoteRequest(from_environment="staging", environment="production"), timeout=30
    )
    production = healthy(shop.daemon, promoted)
    assert production.digest == v2  # the digest built and deployed, never rebuilt
    wait_version(shop.production, "2.0.0")
    at_production = shop.containers("production")
    assert len(at_production) == 2
    assert {_env(c)["GREETING"] for c in at_production} == {"hello from production"}
    assert {_env(c)["GREETING"] for c in shop.containers()} == {"hello from staging"}
    environment = get_environment(shop.daemon, "production")
    assert environment.healthy, environment.health_detail
    assert [r.healthy for r in environment.replicas] == [True, True]


@pytest.mark.parametrize(
    ("health", "watch"),
    [("missing", "0.5s"), ("late", "4s")],
    ids=["health-failing", "failing-after-2s-in-the-watch-window"],
)
def test_a_broken_version_rolls_back_automatically_without_a_failed_request(
    shop: Shop, health: Health, watch: str
) -> None:
    v1 = shop.release("1.0.0", watch=watch)
    good = healthy(shop.daemon, deploy(shop.daemon, "staging", v1))
    wait_version(shop.staging, "1.0.0")
    serving = {c["Id"] for c in shop.containers()}

    v2 = shop.release("2.0.0", health, watch=watch)
    with Poller(shop.staging) as poller:
        broken = finished(shop.daemon, deploy(shop.daemon, "staging", v2).id)
        wait_version(shop.staging, "1.0.0")
    assert broken.status == S.DEPLOYMENT_STATUS_ROLLED_BACK, broken.reason
    assert poller.failed == 0, poller.summary()
    restore = get_deployment(shop.daemon, broken.restored_by)
    assert restore.status == S.DEPLOYMENT_STATUS_HEALTHY and restore.digest == v1
    assert restore.restores_id == good.id

    containers = shop.containers()
    assert [(c["State"]["Status"], c["Config"]["Labels"][LABEL_DIGEST]) for c in containers] == [
        ("running", v1),
        ("running", v1),
    ]
    assert {c["Id"] for c in containers} == serving  # the previous replicas never stopped


def test_a_daemon_killed_mid_rollout_restarts_on_the_healthy_version_without_orphans(
    shop: Shop,
) -> None:
    v1 = shop.release("1.0.0")
    first = healthy(shop.daemon, deploy(shop.daemon, "staging", v1))
    v2 = shop.release("2.0.0", watch="60s")  # still watching when the daemon dies
    rolling = deploy(shop.daemon, "staging", v2)
    wait_logged(shop.daemon, rolling.id, "watching 2 replica(s)")
    assert len(shop.containers()) == 4  # two new in traffic, two old on standby

    shop.daemon.kill()
    shop.daemon.start()

    interrupted = finished(shop.daemon, rolling.id, timeout=60)
    assert interrupted.status == S.DEPLOYMENT_STATUS_INTERRUPTED, interrupted.reason
    environment = settled(shop.daemon, "staging")
    notes = [e.message for e in get_deployment(shop.daemon, rolling.id).events]
    assert environment.current.id == first.id
    assert environment.healthy, (environment.health_detail, notes)
    wait_version(shop.staging, "1.0.0")
    containers = shop.containers()
    assert [(c["State"]["Status"], c["Config"]["Labels"][LABEL_DIGEST]) for c in containers] == [
        ("running", v1),
        ("running", v1),
    ]
    assert sorted(r.port for r in environment.replicas) == sorted(
        int(c["Config"]["Labels"][LABEL_PORT]) for c in containers
    )
