"""The single-node Swarm of this machine, for the ``swarm`` deploy target's
tests (marked ``docker``).

``scripts/services.sh start`` (or ``scripts/services.sh swarm`` on a running
engine) makes the engine a single-node swarm on 127.0.0.1 and removes the
``ingress`` overlay and the ``docker_gwbridge`` bridge. :func:`unavailable`
says why Swarm tests cannot run; the ``swarm`` fixture of the test modules
skips them with that reason, or fails them when
``CONVEYOR_REQUIRE_DOCKER=1``.

Tests own the services labelled with their daemon's owner id
(``dev.conveyor.owner``): :func:`remove_services` removes them, and waits
until their containers are gone.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import docker
from docker.errors import DockerException, NotFound

from conveyor.plugin import LABEL_OWNER
from tests.support import docker as docker_support


def unavailable() -> str | None:
    """Why Swarm tests cannot run here, in one line; None when the engine,
    the registry and the base image are there and the engine is a Swarm
    manager."""
    reason = docker_support.unavailable()
    if reason is not None:
        return reason
    api = docker.APIClient(timeout=5)
    try:
        swarm: dict[str, Any] = api.info().get("Swarm") or {}
    except DockerException as exc:
        return f"the Docker engine does not answer ({exc})"
    finally:
        api.close()
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        state = swarm.get("LocalNodeState") or "unknown"
        return f"the Docker engine is not a Swarm manager ({state}); run scripts/services.sh swarm"
    return None


def services(owner: str) -> list[dict[str, Any]]:
    """The services labelled for ``owner``."""
    api = docker.APIClient()
    try:
        found: list[dict[str, Any]] = api.services(filters={"label": f"{LABEL_OWNER}={owner}"})  # type: ignore[no-untyped-call]
        return found
    finally:
        api.close()


def containers(owner: str) -> list[str]:
    """Ids of the containers (any state) labelled for ``owner``: the tasks'."""
    api = docker.APIClient()
    try:
        return [
            c["Id"] for c in api.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
        ]
    finally:
        api.close()


def remove_services(owner: str, timeout: float = 60) -> None:
    """Remove ``owner``'s services and wait until their containers are gone
    (a task stop takes a few seconds in Swarm)."""
    api = docker.APIClient()
    try:
        for service in services(owner):
            with contextlib.suppress(NotFound):
                api.remove_service(service["ID"])  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + timeout
        while containers(owner):
            if time.monotonic() > deadline:
                for container in containers(owner):
                    with contextlib.suppress(NotFound):
                        api.remove_container(container, force=True)
                break
            time.sleep(0.2)
    finally:
        api.close()
