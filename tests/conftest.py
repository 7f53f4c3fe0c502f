"""Shared fixtures: a real daemon, real git repositories, the Docker engine and registries."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.docker import AuthRegistry, DockerSandbox, docker_required, unavailable
from tests.support.repos import GitRepo, make_repo


@pytest.fixture
def daemon_home() -> Iterator[Path]:
    # unix socket paths are limited to ~107 bytes: keep the home short
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def daemon(daemon_home: Path) -> Iterator[DaemonProcess]:
    """A running daemon with a short kill grace period."""
    proc = DaemonProcess(daemon_home, args=["--kill-grace", "1"]).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[DaemonProcess]:
    """One daemon for a whole test module, with the same short kill grace
    period: for tests that need no fresh home, so a module starts one
    daemon instead of one per test. They must read back only what they
    made (their own pipeline names, run ids) and leave no run running."""
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    proc = DaemonProcess(home, args=["--kill-grace", "1"]).start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def repo_factory(tmp_path: Path) -> Callable[..., GitRepo]:
    counter = iter(range(1000))

    def factory(files: dict[str, str], name: str = "") -> GitRepo:
        return make_repo(tmp_path / (name or f"repo{next(counter)}"), files)

    return factory


@pytest.fixture
def pipeline_repo(repo_factory: Callable[..., GitRepo]) -> Callable[[str], GitRepo]:
    """A repository holding just the given conveyor.yaml."""

    def factory(pipeline: str) -> GitRepo:
        return repo_factory({"conveyor.yaml": pipeline})

    return factory


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The Docker engine, the registry on 127.0.0.1:5000 and the base image
    are there; otherwise the test is skipped with the reason, or fails when
    CONVEYOR_REQUIRE_DOCKER=1 (CI, where they must be)."""
    reason = unavailable()
    if reason is None:
        return
    if docker_required():
        pytest.fail(f"CONVEYOR_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def docker_sandbox(docker_engine: None) -> Iterator[DockerSandbox]:
    """Image names for one test; its images, containers and pushed manifests
    are removed afterwards."""
    sandbox = DockerSandbox()
    try:
        yield sandbox
    finally:
        sandbox.cleanup()


@pytest.fixture(scope="session")
def auth_registry(docker_engine: None) -> Iterator[AuthRegistry]:
    """A second registry, on a free loopback port, that wants a login."""
    registry = AuthRegistry().start()
    try:
        yield registry
    finally:
        registry.stop()
