"""The ``docker`` and ``swarm`` deploy targets under test: what the daemon
hands a target, for in-process tests (an image artifact, an environment, a
context with a real HTTP health probe, requests), and, through a real
daemon, builds, deployments, environments and the clean-up of what a
daemon deployed."""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import secrets
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import docker
import trio
from docker.errors import NotFound as DockerNotFound

from conveyor.plugin import (
    LABEL_DEPLOYMENT,
    LABEL_DIGEST,
    LABEL_ENVIRONMENT,
    LABEL_OWNER,
    LABEL_PORT,
    OCI_IMAGE,
    Artifact,
    Environment,
    HealthCheck,
    ProbeResult,
    ReplicaRequest,
    ServiceRequest,
    TargetContext,
)
from conveyor.v1 import artifacts_pb2, delivery_pb2, runs_pb2
from tests.support.daemon import DaemonProcess


def image_artifact(image_id: str, name: str, version: str = "1.0.0") -> Artifact:
    """A recorded ``oci-image`` artifact for a local (never pushed) image."""
    return Artifact(
        digest=image_id,
        kind=OCI_IMAGE,
        name=name,
        version=version,
        tags=(version,),
        size=0,
        media_type="",
        repository="",
        ref="",
        commit="",
        pipeline="deploy-test",
        run_id="",
        run_number=0,
        stage="image",
        stages=(),
        created_at=time.time(),
        trace_id="",
        span_id="",
        pushed_to=(),
        manifest_digest="",
        reproducible=True,
        changed_files=(),
        provenance="",
        key_id="",
        attributes={},
    )


def environment(
    artifact: Artifact,
    *,
    name: str = "staging",
    target: str = "docker",
    replicas: int = 1,
    config: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    stop_grace: float = 2.0,
    watch_window: float = 1.0,
) -> Environment:
    return Environment(
        name=name,
        target=target,
        replicas=replicas,
        artifact=artifact,
        command=(),
        config=dict(config or {}),
        config_hash="",
        port=0,
        health=HealthCheck(path="/health"),
        readiness_timeout=20.0,
        watch_window=watch_window,
        stop_grace=stop_grace,
        options=dict(options or {}),
    )


def http_probe(path: str) -> Any:
    """A ``TargetContext.probe_port``: GET ``path`` on the port, healthy on 2xx."""

    async def probe(port: int) -> ProbeResult:
        def get() -> ProbeResult:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            try:
                conn.request("GET", path)
                status = conn.getresponse().status
                return ProbeResult(200 <= status < 300, f"HTTP {status}")
            except OSError as exc:
                return ProbeResult(False, str(exc))
            finally:
                conn.close()

        return await trio.to_thread.run_sync(get)

    return probe


@dataclass
class Deployer:
    """One test's daemon identity (the owner label) and the log lines the
    target wrote."""

    state_dir: Path
    owner: str = field(default_factory=lambda: f"test-{secrets.token_hex(6)}")
    lines: list[str] = field(default_factory=list)

    def context(self, environment: str = "staging") -> TargetContext:
        async def log_line(text: str) -> None:
            self.lines.append(text)

        return TargetContext(
            environment=environment,
            owner=self.owner,
            state_dir=self.state_dir,
            stop_grace=2.0,
            log_line=log_line,
            probe_port=http_probe("/health"),
        )

    def labels(self, env: Environment, deployment_id: str) -> dict[str, str]:
        return {
            LABEL_ENVIRONMENT: env.name,
            LABEL_DEPLOYMENT: deployment_id,
            LABEL_DIGEST: env.artifact.digest,
            LABEL_OWNER: self.owner,
        }

    def replica_request(self, env: Environment, port: int, deployment_id: str) -> ReplicaRequest:
        return ReplicaRequest(
            environment=env,
            deployment_id=deployment_id,
            port=port,
            env={**env.config, "PORT": str(port), "CONVEYOR_ENVIRONMENT": env.name},
            labels={**self.labels(env, deployment_id), LABEL_PORT: str(port)},
        )

    def service_request(self, env: Environment, base: int, deployment_id: str) -> ServiceRequest:
        """Slot n on ``base * 10 + n``."""
        return ServiceRequest(
            environment=env,
            deployment_id=deployment_id,
            ports=tuple(base * 10 + slot for slot in range(1, env.replicas + 1)),
            env={**env.config, "CONVEYOR_ENVIRONMENT": env.name},
            labels=self.labels(env, deployment_id),
        )


def with_artifact(env: Environment, artifact: Artifact) -> Environment:
    return replace(env, artifact=artifact)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_slot_base(replicas: int) -> int:
    """A prefix whose ports ``<prefix>1``..``<prefix><replicas>`` are free
    on 127.0.0.1 (for Swarm slot templates)."""
    for _ in range(200):
        base = random.randrange(1500, 6000)
        if all(_free(base * 10 + slot) for slot in range(1, replicas + 1)):
            return base
    raise RuntimeError("no free block of ports found")


# -- through a real daemon -----------------------------------------------------------


FINAL = {
    delivery_pb2.DEPLOYMENT_STATUS_HEALTHY,
    delivery_pb2.DEPLOYMENT_STATUS_FAILED,
    delivery_pb2.DEPLOYMENT_STATUS_ROLLED_BACK,
    delivery_pb2.DEPLOYMENT_STATUS_REJECTED,
    delivery_pb2.DEPLOYMENT_STATUS_EXPIRED,
    delivery_pb2.DEPLOYMENT_STATUS_INTERRUPTED,
}


def owner_of(home: Path) -> str:
    """The owner label a daemon in ``home`` puts on what it deploys."""
    return f"conveyor://{socket.gethostname()}{home}"


def built_image(daemon: DaemonProcess, repo: Path, timeout: float = 120) -> str:
    """Run the repository's pipeline; the digest of the image it built."""
    run = daemon.wait(daemon.submit(repo).id, timeout=timeout)
    if run.status != runs_pb2.RUN_STATUS_SUCCEEDED:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in run.stages)
        raise AssertionError(f"run {run.id} ended {run.status}: {run.reason} ({reasons})")
    found = daemon.stub.ListArtifacts(
        artifacts_pb2.ListArtifactsRequest(commit=run.commit), timeout=10
    )
    [artifact] = [a for a in found.artifacts if a.run_id == run.id] or found.artifacts[:1]
    return str(artifact.digest)


def deploy(daemon: DaemonProcess, environment: str, digest: str) -> delivery_pb2.Deployment:
    return daemon.stub.Deploy(
        delivery_pb2.DeployRequest(environment=environment, artifact=digest), timeout=30
    )


def get_deployment(daemon: DaemonProcess, deployment_id: str) -> delivery_pb2.Deployment:
    return daemon.stub.GetDeployment(
        delivery_pb2.GetDeploymentRequest(deployment_id=deployment_id), timeout=10
    )


def finished(
    daemon: DaemonProcess, deployment_id: str, timeout: float = 120
) -> delivery_pb2.Deployment:
    """The deployment once it reached a final status (a poll with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        found = get_deployment(daemon, deployment_id)
        if found.status in FINAL:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"deployment {deployment_id} still {found.status}: {found.reason}")
        time.sleep(0.05)


def wait_logged(
    daemon: DaemonProcess, deployment_id: str, text: str, timeout: float = 60
) -> delivery_pb2.Deployment:
    """Wait until a line of the deployment's log holds ``text``."""
    deadline = time.monotonic() + timeout
    while True:
        found = get_deployment(daemon, deployment_id)
        if any(text in event.message for event in found.events):
            return found
        if found.status in FINAL or time.monotonic() > deadline:
            lines = "\n".join(e.message for e in found.events)
            raise AssertionError(f"{text!r} never logged by {deployment_id}:\n{lines}")
        time.sleep(0.02)


def get_environment(daemon: DaemonProcess, name: str) -> delivery_pb2.Environment:
    return daemon.stub.GetEnvironment(
        delivery_pb2.GetEnvironmentRequest(environment=name), timeout=30
    )


def stop_processes_of(home: Path) -> None:
    """SIGKILL what a daemon in ``home`` left running on purpose (its front
    proxies outlive it): every process whose command line names ``home``."""
    marker = str(home).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


def labelled_containers(owner: str, environment: str = "") -> list[dict[str, Any]]:
    """The containers (any state) a daemon labelled, inspected."""
    labels = [f"{LABEL_OWNER}={owner}"]
    if environment:
        labels.append(f"{LABEL_ENVIRONMENT}={environment}")
    api = docker.APIClient()
    try:
        found = []
        for summary in api.containers(all=True, filters={"label": labels}):
            with contextlib.suppress(DockerNotFound):
                found.append(api.inspect_container(summary["Id"]))
        return found
    finally:
        api.close()


def remove_containers(owner: str) -> None:
    api = docker.APIClient()
    try:
        for details in labelled_containers(owner):
            with contextlib.suppress(DockerNotFound):
                api.remove_container(details["Id"], force=True)
    finally:
        api.close()
