"""How the daemon runs a stage on an executor that runs containers, in
process with a recording executor: the container it asks for (image,
limits, network, user, labels, from the stage and the pipeline's
defaults), the environment (the stage's, not the daemon's machine's), the
workspace made writable for a non-root container user, a confining stage
user, and a process its container killed (:class:`ProcessKilled`)."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from conveyor.daemon.config import Config
from conveyor.daemon.records import RunRecord, RunStatus, StageStatus
from conveyor.daemon.service import RunService, SubmitRequest
from conveyor.plugin import (
    CONTAINER_WORKSPACE,
    LABEL_DAEMON,
    LABEL_RUN,
    LABEL_STAGE,
    Executor,
    ProcessKilled,
    ProcessRequest,
    StageOutput,
    StageUser,
    hookimpl,
)
from tests.support.inprocess import plugins_with, serving
from tests.support.repos import make_repo

PATIENCE = 20
DAEMON = "conveyor://test/home"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")


@dataclass
class Boxed:
    """An executor that runs containers, recording the requests it gets."""

    name: str = "boxed"
    container_fields: frozenset[str] = frozenset({"image", "resources", "network", "user"})
    requests: list[ProcessRequest] = field(default_factory=list)

    async def run(self, request: ProcessRequest, output: StageOutput) -> int:
        self.requests.append(request)
        if "oom" in request.argv[-1]:
            raise ProcessKilled(
                "killed: out of memory (limit 64m)", exit_code=137, error_type="out_of_memory"
            )
        return 0

    async def cleanup(self, daemon: str, live_runs: Collection[str]) -> int:
        return 0


class BoxedPlugin:
    def __init__(self, executor: Boxed) -> None:
        self.executor = executor

    @hookimpl
    def conveyor_executors(self) -> list[Executor]:
        return [self.executor]


@dataclass
class Harness:
    service: RunService
    boxed: Boxed
    config: Config
    root: Path
    count: int = 0

    async def run(self, pipeline: str) -> RunRecord:
        self.count += 1
        repo = self.root / f"repo{self.count}"
        await trio.to_thread.run_sync(make_repo, repo, {"conveyor.yaml": pipeline})
        run, _ = await self.service.submit(SubmitRequest(repository=str(repo), ref="main"))
        with trio.fail_after(PATIENCE):
            async for _ in self.service.watch(run.id, 0):
                pass
        return await self.service.get_run(run.id)

    def log(self, run: RunRecord, stage: str) -> bytes:
        return (self.config.logs_dir / run.id / f"{stage}.log").read_bytes()


@asynccontextmanager
async def open_daemon(root: Path, stage_user: StageUser | None = None) -> AsyncIterator[Harness]:
    config = Config(home=root / "home", kill_grace=1.0, keep_workspaces=True)
    boxed = Boxed()
    async with serving(
        config,
        plugins_with(boxed=BoxedPlugin(boxed)),
        base_env={"PATH": os.environ["PATH"], "HOME": "/daemon/home", "DAEMON_MARK": "here"},
        stage_user=stage_user,
        daemon_id=DAEMON,
    ) as wired:
        yield Harness(wired.service, boxed, config, root)


PIPELINE = """
name: boxes
image: tools:1
resources: {memory: 1g}
stages:
  build:
    executor: boxed
    network: host
    resources: {cpus: 1.5}
    env: {MODE: fast}
    run: make
  on-the-host:
    needs: [build]
    run: echo "mark=$DAEMON_MARK"
"""


async def test_the_executor_gets_the_stage_container_and_environment(tmp_path: Path) -> None:
    async with open_daemon(tmp_path) as h:
        run = await h.run(PIPELINE)
    assert run.status is RunStatus.SUCCEEDED, run.reason
    (request,) = h.boxed.requests
    container = request.container
    assert container is not None
    workspace = h.config.workspaces_dir / run.id
    assert (container.image, container.network) == ("tools:1", "host")
    assert (container.cpus, container.memory, container.memory_text) == (1.5, 1 << 30, "1g")
    assert container.workspace == workspace and request.cwd == workspace
    assert container.container_path(request.cwd) == CONTAINER_WORKSPACE
    assert container.labels == {LABEL_RUN: run.id, LABEL_STAGE: "build", LABEL_DAEMON: DAEMON}
    assert container.daemon == DAEMON
    env = request.env
    assert env["CONVEYOR_WORKSPACE"] == CONTAINER_WORKSPACE
    assert env["MODE"] == "fast" and env["CONVEYOR_STAGE"] == "build" and env["TRACEPARENT"]
    assert not {"PATH", "HOME", "DAEMON_MARK"} & set(env), "nothing of the daemon's machine"
    assert b"mark=here" in h.log(run, "on-the-host"), "local stages keep the daemon's variables"


async def test_a_container_runs_as_a_non_root_user_that_can_write_the_workspace(
    tmp_path: Path,
) -> None:
    async with open_daemon(tmp_path) as h:
        run = await h.run(PIPELINE)
    (request,) = h.boxed.requests
    assert request.container is not None
    if os.geteuid() != 0:
        assert request.container.user == f"{os.geteuid()}:{os.getegid()}", "the daemon's user"
        assert request.user is None
        return
    assert request.container.user == "65534:65534", "nobody, when the daemon is root"
    assert request.user == StageUser(name="65534", uid=65534, gid=65534)
    workspace = h.config.workspaces_dir / run.id
    mode = workspace.stat()
    assert (mode.st_gid, stat.S_IMODE(mode.st_mode)) == (65534, 0o1770)
    assert (workspace / "conveyor.yaml").stat().st_uid == 65534, "the checkout is nobody's"


@root_only
async def test_a_stage_user_is_the_container_user_and_cannot_be_overridden(
    tmp_path: Path,
) -> None:
    confined = StageUser(name="builder", uid=4321, gid=4321)
    async with open_daemon(tmp_path, stage_user=confined) as h:
        run = await h.run(PIPELINE)
        refused = await h.run(PIPELINE.replace("network: host", "user: 0"))
    assert run.status is RunStatus.SUCCEEDED, run.reason
    request = h.boxed.requests[0]
    assert request.container is not None and request.container.user == "4321:4321"
    assert request.user == confined
    build = refused.stage("build")
    assert build.status is StageStatus.FAILED
    assert build.reason == (
        "user 0: this daemon runs every stage as its stage user builder (4321:4321);"
        " leave user: out"
    )
    assert len(h.boxed.requests) == 1, "the refused stage never reached the executor"


async def test_a_process_its_container_killed_fails_the_stage_with_the_reason(
    tmp_path: Path,
) -> None:
    async with open_daemon(tmp_path) as h:
        run = await h.run(PIPELINE.replace("run: make", "run: oom"))
    build = run.stage("build")
    assert build.status is StageStatus.FAILED
    assert (build.reason, build.exit_code) == ("killed: out of memory (limit 64m)", 137)
    assert b"stage failed: killed: out of memory (limit 64m)" in h.log(run, "build")
    assert run.stage("on-the-host").status is StageStatus.SKIPPED
