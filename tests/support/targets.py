"""What the daemon hands a deploy target, for in-process tests of the
``docker`` and ``swarm`` targets: an image artifact, an environment, a
context (with a real HTTP health probe) and requests."""

from __future__ import annotations

import http.client
import random
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

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
