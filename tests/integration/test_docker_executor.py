"""The ``docker`` executor in process, on the real engine: output reaches
the stage log while the container runs, a full disk stops the container
and fails with the disk's error, and requests it cannot honour are refused
before anything is made."""

from __future__ import annotations

import dataclasses
import errno
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
import trio

from conveyor.daemon.executors.base import LogOutput
from conveyor.daemon.logstore import StageLog
from conveyor.plugin import (
    LABEL_DAEMON,
    LABEL_RUN,
    LABEL_STAGE,
    ContainerSpec,
    ExecutorError,
    OutputWriter,
    ProcessRequest,
    StageUser,
)
from conveyor.plugins.executors.docker import DockerExecutor
from tests.support.docker import BASE_IMAGE
from tests.support.executors import remove_everything, run_containers

pytestmark = pytest.mark.docker


@pytest.fixture
def workspace(tmp_path: Path, docker_engine: None) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    return folder


@pytest.fixture
def run_id() -> Iterator[str]:
    """A run id of the test's own; what is left with it is removed."""
    daemon = f"test-{secrets.token_hex(4)}"
    try:
        yield daemon
    finally:
        remove_everything(daemon)


def request(
    workspace: Path, run_id: str, *argv: str, user: StageUser | None = None
) -> ProcessRequest:
    spec = ContainerSpec(
        image=BASE_IMAGE,
        workspace=workspace,
        user="65534:65534",
        daemon=run_id,
        labels={LABEL_RUN: run_id, LABEL_STAGE: "s", LABEL_DAEMON: run_id},
    )
    return ProcessRequest(
        argv=list(argv), cwd=workspace, env={}, kill_grace=1.0, container=spec, user=user
    )


async def test_output_reaches_the_log_while_the_container_runs(
    workspace: Path, run_id: str
) -> None:
    log = StageLog(workspace.parent / "stage.log")
    argv = ("sh", "-c", "echo first; while [ ! -e go ]; do sleep 0.05; done; echo second")

    async def release_when_first_is_logged() -> None:
        while True:  # the log file, as a follower reads it
            if log.path.exists() and b"first" in log.path.read_bytes():
                break
            await trio.sleep(0.05)
        await trio.Path(workspace / "go").touch()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(release_when_first_is_logged)
            code = await DockerExecutor().run(request(workspace, run_id, *argv), LogOutput(log))
    assert code == 0
    assert log.path.read_bytes() == b"first\nsecond\n"
    assert run_containers(run_id) == []


class _FullDiskWriter:
    def write(self, data: bytes | memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        pass

    def __enter__(self) -> _FullDiskWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass


class _FullDisk:
    """A stage output on a full disk."""

    at_line_start = True

    async def write(self, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def open_writer(self) -> OutputWriter:
        return _FullDiskWriter()


async def test_a_full_disk_stops_the_container_and_fails_with_the_disk_error(
    workspace: Path, run_id: str
) -> None:
    argv = ("sh", "-c", "trap '' TERM; while true; do echo output; sleep 0.05; done")
    with trio.fail_after(30), pytest.raises(OSError) as raised:
        await DockerExecutor().run(request(workspace, run_id, *argv), _FullDisk())
    assert raised.value.errno == errno.ENOSPC
    assert run_containers(run_id) == [], "the container was stopped and removed"


async def test_an_image_the_engine_lacks_is_refused_without_a_pull(
    workspace: Path, run_id: str
) -> None:
    missing = request(workspace, run_id, "true")
    assert missing.container is not None
    image = f"127.0.0.1:5000/none/{run_id}:1"
    missing = dataclasses.replace(
        missing, container=dataclasses.replace(missing.container, image=image)
    )
    with pytest.raises(ExecutorError) as raised:
        await DockerExecutor().run(missing, LogOutput(StageLog(workspace.parent / "l.log")))
    assert "has no image" in str(raised.value) and "never pulls" in str(raised.value)
    assert run_containers(run_id) == []


async def test_requests_it_cannot_honour_are_refused(workspace: Path, run_id: str) -> None:
    output = LogOutput(StageLog(workspace.parent / "l.log"))
    executor = DockerExecutor()
    outside = request(workspace, run_id, "true")
    with pytest.raises(ExecutorError, match="outside it"):
        await executor.run(
            ProcessRequest(
                argv=["true"], cwd=workspace.parent, env={}, container=outside.container
            ),
            output,
        )
    other_user = request(workspace, run_id, "true", user=StageUser("builder", 4321, 4321))
    with pytest.raises(ExecutorError, match="not the stage user builder"):
        await executor.run(other_user, output)
    with pytest.raises(ExecutorError, match="runs processes in containers"):
        await executor.run(ProcessRequest(argv=["true"], cwd=workspace, env={}), output)
    assert run_containers(run_id) == []
