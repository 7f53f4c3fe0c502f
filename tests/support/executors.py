"""What the ``docker`` and ``swarm`` executors' tests share: an image built
for a test from the base image, and what the executors left on the engine
(containers, services, volumes), found by their labels."""

from __future__ import annotations

import contextlib
import io
import socket
import tarfile
import time
from pathlib import Path
from typing import Any

import docker
from docker.errors import NotFound

from conveyor.plugin import LABEL_DAEMON, LABEL_RUN
from tests.support.docker import DockerSandbox


def build_image(sandbox: DockerSandbox, name: str, *steps: str) -> str:
    """Build ``steps`` on the base image, tagged ``<sandbox repo>/<name>:1``
    and never pushed; returns the tag. The sandbox removes it."""
    data = sandbox.dockerfile(*steps).encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    tag = f"{sandbox.image(name)}:1"
    api = docker.APIClient()
    try:
        for chunk in api.build(
            fileobj=context, custom_context=True, tag=tag, rm=True, decode=True, pull=False
        ):
            if "errorDetail" in chunk:
                raise RuntimeError(f"building {tag} failed: {chunk['errorDetail']}")
    finally:
        api.close()
    return tag


def daemon_id(home: Path) -> str:
    """The id of the daemon whose home is ``home`` (``conveyor.daemon``)."""
    return f"conveyor://{socket.gethostname()}{home}"


def containers(label: str, value: str) -> list[dict[str, Any]]:
    """Containers in any state labelled ``label=value``."""
    api = docker.APIClient()
    try:
        found: list[dict[str, Any]] = api.containers(
            all=True, filters={"label": f"{label}={value}"}
        )
        return found
    finally:
        api.close()


def run_containers(run_id: str) -> list[dict[str, Any]]:
    return containers(LABEL_RUN, run_id)


def services(label: str, value: str) -> list[dict[str, Any]]:
    api = docker.APIClient()
    try:
        found: list[dict[str, Any]] = api.services(filters={"label": f"{label}={value}"})  # type: ignore[no-untyped-call]
        return found
    finally:
        api.close()


def volumes(label: str, value: str) -> list[dict[str, Any]]:
    api = docker.APIClient()
    try:
        found: list[dict[str, Any]] = (
            api.volumes(filters={"label": f"{label}={value}"}).get("Volumes") or []
        )
        return found
    finally:
        api.close()


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    """Poll ``check()`` until it returns something true; return it."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def remove_everything(daemon: str) -> None:
    """Remove what the executors made for ``daemon`` (a failed test's
    leftovers): services, containers, volumes."""
    api = docker.APIClient()
    try:
        for service in services(LABEL_DAEMON, daemon):
            with contextlib.suppress(NotFound):
                api.remove_service(service["ID"])  # type: ignore[no-untyped-call]
        for container in containers(LABEL_DAEMON, daemon):
            with contextlib.suppress(NotFound):
                api.remove_container(container["Id"], v=True, force=True)
        for volume in volumes(LABEL_DAEMON, daemon):
            with contextlib.suppress(NotFound, docker.errors.APIError):
                api.remove_volume(volume["Name"], force=True)
    finally:
        api.close()
