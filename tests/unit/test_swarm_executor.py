"""The ``swarm`` executor's decisions, without a cluster: the workspace
volume it asks each node for (a bind, or NFS), and what a task's end means
(an exit code, a rejection, a task Swarm ended, a node that went down)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.daemon.executors.base import LogOutput
from conveyor.daemon.logstore import StageLog
from conveyor.plugin import (
    LABEL_DAEMON,
    LABEL_RUN,
    LABEL_STAGE,
    ContainerSpec,
    ExecutorError,
    ProcessKilled,
    ProcessRequest,
)
from conveyor.plugins.executors import swarm
from conveyor.plugins.executors.common import ContainerRequest, checked

SPEC = ContainerSpec(
    image="tools:1",
    workspace=Path("/var/lib/conveyor/workspaces/01a2b3"),
    user="65534:65534",
    memory=64 << 20,
    labels={LABEL_RUN: "01a2b3", LABEL_STAGE: "test", LABEL_DAEMON: "conveyor://ci/home"},
)
REQUEST = ProcessRequest(
    argv=["sh", "-c", "make {{x}}"],
    cwd=SPEC.workspace / "src",
    env={"GREETING": "{{hello}}"},
    kill_grace=2.5,
    container=SPEC,
)


def test_the_workspace_is_a_bind_of_the_daemons_folder_on_one_node() -> None:
    mount = swarm.workspace_mount(SPEC, "job-ws", environ={})
    assert (mount["Target"], mount["Source"], mount["Type"]) == ("/workspace", "job-ws", "volume")
    options = mount["VolumeOptions"]
    assert options["NoCopy"] is True, "nothing of the image is copied into the workspace"
    assert options["DriverConfig"] == {
        "Name": "local",
        "Options": {"type": "none", "o": "bind", "device": str(SPEC.workspace)},
    }
    assert options["Labels"][LABEL_RUN] == "01a2b3"


def test_the_workspace_is_an_nfs_share_across_nodes() -> None:
    environ = {swarm.NFS_ENV: "10.0.0.5:/export/conveyor/workspaces/"}
    mount = swarm.workspace_mount(SPEC, "job-ws", environ=environ)
    assert mount["VolumeOptions"]["DriverConfig"]["Options"] == {
        "type": "nfs",
        "o": "addr=10.0.0.5,nfsvers=4.1,hard",
        "device": ":/export/conveyor/workspaces/01a2b3",
    }
    environ[swarm.NFS_OPTIONS_ENV] = "nfsvers=3,soft"
    options = swarm.workspace_mount(SPEC, "job-ws", environ=environ)["VolumeOptions"]
    assert options["DriverConfig"]["Options"]["o"] == "addr=10.0.0.5,nfsvers=3,soft"
    with pytest.raises(ExecutorError, match="expected <server>:<export path>"):
        swarm.workspace_mount(SPEC, "job-ws", environ={swarm.NFS_ENV: "10.0.0.5"})


def test_the_job_runs_the_command_as_given_with_templates_escaped() -> None:
    spec = swarm.service_spec(REQUEST, checked(REQUEST, "swarm"), "conveyor-test-01a2b3-abcdef")
    container = spec["task_template"]["ContainerSpec"]
    assert container["Command"] == ["sh", "-c", "make {{x}}"], "the command is no template"
    assert container["Env"] == ['GREETING={{"{{"}}hello}}'], "an env value reaches it as written"
    assert (container["Dir"], container["User"], container["Init"]) == (
        "/workspace/src",
        "65534:65534",
        True,
    )
    assert container["StopGracePeriod"] == 2_500_000_000
    resources = spec["task_template"]["Resources"]
    assert resources["Limits"]["MemoryBytes"] == resources["Reservations"]["MemoryBytes"]
    assert spec["task_template"]["RestartPolicy"]["Condition"] == "none"
    assert "Networks" not in spec["task_template"], "network: none is no network at all"
    assert spec["mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    assert spec["labels"]["conveyor.executor"] == "swarm"


class FakeSwarm:
    """What the executor asks the engine while it watches a task."""

    def __init__(self, tasks: list[dict[str, Any]], node_state: str = "ready") -> None:
        self._tasks = tasks
        self.node_state = node_state

    def tasks(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        return self._tasks

    def inspect_node(self, node: str) -> dict[str, Any]:
        return {"Description": {"Hostname": "worker-2"}, "Status": {"State": self.node_state}}

    def inspect_container(self, container: str) -> dict[str, Any]:
        return {"State": {"OOMKilled": container == "killed"}}


def task(state: str, **status: Any) -> dict[str, Any]:
    return {
        "ID": "t1",
        "NodeID": "n2",
        "CreatedAt": "2026-01-01T00:00:00Z",
        "Status": {"State": state, **status},
    }


REQ = ContainerRequest(SPEC, "/workspace")


async def test_a_node_that_goes_down_mid_stage_fails_it_with_the_reason(tmp_path: Path) -> None:
    client = FakeSwarm([task("running")], node_state="down")
    output = LogOutput(StageLog(tmp_path / "s.log"))
    with pytest.raises(ProcessKilled) as raised:
        await swarm.SwarmExecutor()._wait_task(client, "svc", REQ, output)  # type: ignore[arg-type]
    assert raised.value.reason == "the node worker-2 running the stage went down mid-stage"
    assert (raised.value.error_type, raised.value.system_error) == ("node_lost", True)


@pytest.mark.parametrize(
    ("ended", "expected"),
    [
        (task("complete", ContainerStatus={"ExitCode": 0}), 0),
        (task("failed", ContainerStatus={"ExitCode": 3}, Err="task: non-zero exit (3)"), 3),
        (
            task("failed", ContainerStatus={"ExitCode": 137, "ContainerID": "killed"}),
            ProcessKilled("killed: out of memory (limit 64m)"),
        ),
        (
            task("rejected", Err="No such image: tools:1"),
            ExecutorError(
                "Swarm could not run the stage's task (rejected): No such image: tools:1"
            ),
        ),
        (
            task("orphaned", Err="node is gone"),
            ProcessKilled("Swarm ended the stage's task (orphaned): node is gone"),
        ),
    ],
)
async def test_how_a_task_ended_is_the_stages_exit_code_or_reason(
    ended: dict[str, Any], expected: int | Exception
) -> None:
    executor = swarm.SwarmExecutor()
    client = FakeSwarm([ended])
    if isinstance(expected, int):
        assert await executor._outcome(client, ended, REQ) == expected  # type: ignore[arg-type]
        return
    with pytest.raises(type(expected)) as raised:
        await executor._outcome(client, ended, REQ)  # type: ignore[arg-type]
    assert str(raised.value) == str(expected)
