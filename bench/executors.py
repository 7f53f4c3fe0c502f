"""Stages in containers: what the ``docker`` and ``swarm`` executors cost per
stage over the same container run by hand with the docker CLI, in the same
run, and how fast a container stage's output reaches its log.

* **docker, per stage**: a one-stage pipeline ``run: "true"`` on
  ``executor: docker`` (the base image), timed by the daemon's own stage
  time stamps (started → finished: the container made, attached, started,
  waited for and removed, the stage recorded), against ``docker run --rm``
  of the same image and command line with the same settings (``--init``,
  no network, the workspace mounted, ``nobody``, no log driver), rounds
  alternating which goes first. Target: median ratio ≤ 1.10 (113 ms was
  measured for ``docker run --rm image true`` on a quiet machine).
  Also the executor alone, in process (``DockerExecutor.run``), against the
  same CLI run.
* **swarm, per stage**: the same stage on ``executor: swarm``, against
  ``docker service create --mode replicated-job`` of the same image and
  command by hand (the CLI waits for the job to complete), then ``docker
  service rm`` (the executor removes its job too). Target: ≤ 1.10 (0.38 s
  was measured for a job of ``true`` on a quiet machine).
* **log throughput**: a ``docker`` stage writing 500 MB to stdout (100 MB
  with ``--quick``): MB/s over the whole stage, from the daemon's time
  stamps, with the log's size checked; against ``docker run --rm`` of the
  same command with its output into a file (the engine's attach stream is
  the one both read). Target: ≥ 100 MB/s.

Needs the engine, the registry, the base image and the swarm
(``scripts/services.sh start``).
"""

from __future__ import annotations

import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import yaml

from bench.common import (
    MB,
    BenchResult,
    Figure,
    get_run,
    running_daemon,
    scratch_dir,
    seconds,
    submit,
    wait_finished,
)
from conveyor.daemon.executors.base import LogOutput
from conveyor.daemon.logstore import StageLog
from conveyor.plugin import LABEL_DAEMON, LABEL_RUN, LABEL_STAGE, ContainerSpec, ProcessRequest
from conveyor.plugins.executors.docker import DockerExecutor
from conveyor.plugins.run import shell_script
from conveyor.v1 import runs_pb2
from tests.support import swarm as swarm_support
from tests.support.daemon import DaemonProcess
from tests.support.docker import BASE_IMAGE
from tests.support.executors import daemon_id, remove_everything
from tests.support.repos import make_repo

NAME = "executors"
RATIO_TARGET = 1.10
THROUGHPUT_TARGET = 100.0
NOBODY = "65534:65534"


def _stage_seconds(daemon: DaemonProcess, repo: Path, stage: str = "s") -> float:
    run = submit(daemon, repo)
    wait_finished(daemon, run.id)
    final = get_run(daemon, run.id)
    if final.status != runs_pb2.RUN_STATUS_SUCCEEDED:
        raise RuntimeError(f"run {run.id} did not succeed: {final.reason}")
    (found,) = [s for s in final.stages if s.name == stage]
    return seconds(found.finished_at) - seconds(found.started_at)


def _pipeline(root: Path, name: str, executor: str, command: str) -> Path:
    text = yaml.safe_dump(
        {
            "name": name,
            "stages": {"s": {"executor": executor, "image": BASE_IMAGE, "run": command}},
        },
        sort_keys=False,
    )
    return make_repo(root / name, {"conveyor.yaml": text}).path


def _argv(command: str) -> list[str]:
    """What the ``run`` kind runs for ``run: <command>``."""
    return ["sh", "-e", "-c", shell_script([command])]


def _timed(argv: list[str], **kwargs: Any) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, **kwargs)
    return time.perf_counter() - started


def _docker_run(workspace: Path, argv: list[str]) -> list[str]:
    """``docker run --rm`` with the settings the executor uses."""
    return [
        "docker", "run", "--rm", "--init", "--network", "none", "--log-driver", "none",
        "--user", NOBODY, "--security-opt", "no-new-privileges",
        "-v", f"{workspace}:/workspace", "-w", "/workspace",
        "--entrypoint", argv[0], BASE_IMAGE, *argv[1:],
    ]  # fmt: skip


def _service_create(name: str, workspace: Path, argv: list[str]) -> list[str]:
    """``docker service create`` of a job with the settings the executor uses."""
    volume = (
        f"type=volume,source={name}-ws,target=/workspace,volume-nocopy,volume-driver=local,"
        f"volume-opt=type=none,volume-opt=o=bind,volume-opt=device={workspace}"
    )
    return [
        "docker", "service", "create", "--quiet", "--name", name,
        "--mode", "replicated-job", "--restart-condition", "none", "--no-resolve-image",
        "--init", "--user", NOBODY, "--mount", volume, "--workdir", "/workspace",
        "--label", f"dev.conveyor.bench={name}",
        "--entrypoint", argv[0], BASE_IMAGE, *argv[1:],
    ]  # fmt: skip


def _remove_by_hand_job(name: str) -> None:
    """The by-hand job's leftovers (engines before 24 keep a removed job's
    containers), not timed."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={name}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", "-v", *ids], check=True, capture_output=True)
    subprocess.run(["docker", "volume", "rm", f"{name}-ws"], check=False, capture_output=True)


def _in_process(workspace: Path, argv: list[str], rounds: int) -> list[float]:
    """``DockerExecutor.run`` alone, in this process, ``rounds`` times."""
    run_id = f"bench-{secrets.token_hex(4)}"
    spec = ContainerSpec(
        image=BASE_IMAGE,
        workspace=workspace,
        user=NOBODY,
        daemon=run_id,
        labels={LABEL_RUN: run_id, LABEL_STAGE: "s", LABEL_DAEMON: run_id},
    )
    request = ProcessRequest(argv=argv, cwd=workspace, env={}, kill_grace=1.0, container=spec)
    times: list[float] = []

    async def main() -> None:
        executor = DockerExecutor()
        output = LogOutput(StageLog(workspace.parent / "in-process.log"))
        for _ in range(rounds):
            started = time.perf_counter()
            code = await executor.run(request, output)
            times.append(time.perf_counter() - started)
            if code != 0:
                raise RuntimeError(f"the container exited with {code}")

    try:
        trio.run(main)
    finally:
        remove_everything(run_id)
    return times


def _alternate(
    rounds: int, ours: Callable[[], float], theirs: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """``rounds`` of both, alternating which goes first; one of each first,
    not counted (images and caches warm)."""
    ours()
    theirs()
    mine: list[float] = []
    by_hand: list[float] = []
    for round_ in range(rounds):
        if round_ % 2:
            by_hand.append(theirs())
            mine.append(ours())
        else:
            mine.append(ours())
            by_hand.append(theirs())
    return mine, by_hand


def _ratios(mine: list[float], by_hand: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(mine, by_hand, strict=True))


def run(quick: bool) -> BenchResult:
    reason = swarm_support.unavailable()
    if reason is not None:
        raise RuntimeError(f"needs the Docker engine, the registry and the swarm: {reason}")
    docker_rounds = 5 if quick else 20
    swarm_rounds = 3 if quick else 10
    size = (100 if quick else 500) * MB
    throughput_rounds = 1 if quick else 3
    home = Path(tempfile.mkdtemp(prefix="cvb-", dir="/tmp"))
    samples: dict[str, Any] = {}
    try:
        with scratch_dir() as root, running_daemon(home, "--kill-grace", "1") as daemon:
            workspace = root / "workspace"
            workspace.mkdir(mode=0o777)
            workspace.chmod(0o777)
            argv = _argv("true")

            docker_repo = _pipeline(root, "docker-true", "docker", "true")
            docker_stage, docker_cli = _alternate(
                docker_rounds,
                lambda: _stage_seconds(daemon, docker_repo),
                lambda: _timed(_docker_run(workspace, argv)),
            )
            in_process = _in_process(workspace, argv, docker_rounds)
            cli_again = [_timed(_docker_run(workspace, argv)) for _ in range(docker_rounds)]

            swarm_repo = _pipeline(root, "swarm-true", "swarm", "true")
            jobs = iter(range(1000))
            creates: list[float] = []

            def by_hand_job() -> float:
                name = f"conveyor-bench-{secrets.token_hex(3)}-{next(jobs)}"
                try:
                    started = time.perf_counter()
                    subprocess.run(
                        _service_create(name, workspace, argv), check=True, capture_output=True
                    )
                    created = time.perf_counter()
                    subprocess.run(
                        ["docker", "service", "rm", name], check=True, capture_output=True
                    )
                    done = time.perf_counter()
                finally:
                    _remove_by_hand_job(name)
                creates.append(created - started)
                return done - started

            swarm_stage, swarm_cli = _alternate(
                swarm_rounds, lambda: _stage_seconds(daemon, swarm_repo), by_hand_job
            )

            command = f"head -c {size} /dev/zero"
            big_repo = _pipeline(root, "docker-output", "docker", command)
            out_file = root / "cli-output.bin"
            rates: list[float] = []
            cli_rates: list[float] = []
            for _ in range(throughput_rounds):
                run = submit(daemon, big_repo)
                wait_finished(daemon, run.id, timeout=600)
                final = get_run(daemon, run.id)
                (stage,) = final.stages
                if final.status != runs_pb2.RUN_STATUS_SUCCEEDED or stage.log_size < size:
                    raise RuntimeError(f"the output stage failed or lost output: {final.reason}")
                rates.append(size / MB / (seconds(stage.finished_at) - seconds(stage.started_at)))
                with out_file.open("wb") as sink:
                    took = _timed(_docker_run(workspace, _argv(command)), stdout=sink)
                if out_file.stat().st_size < size:
                    raise RuntimeError("docker run lost output")
                cli_rates.append(size / MB / took)
                out_file.unlink()
    finally:
        remove_everything(daemon_id(home))
        subprocess.run(["rm", "-rf", str(home)], check=False)

    def median_ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 1)

    samples = {
        "docker_stage_ms": [round(v * 1000, 1) for v in docker_stage],
        "docker_run_cli_ms": [round(v * 1000, 1) for v in docker_cli],
        "docker_executor_in_process_ms": [round(v * 1000, 1) for v in in_process],
        "docker_run_cli_again_ms": [round(v * 1000, 1) for v in cli_again],
        "swarm_stage_ms": [round(v * 1000, 1) for v in swarm_stage],
        "swarm_by_hand_create_and_rm_ms": [round(v * 1000, 1) for v in swarm_cli],
        "swarm_by_hand_create_ms": [round(v * 1000, 1) for v in creates],
        "docker_stage_output_mb_s": [round(v, 1) for v in rates],
        "docker_run_cli_output_mb_s": [round(v, 1) for v in cli_rates],
    }
    figures = [
        Figure(
            "docker: a stage of `true`",
            median_ms(docker_stage),
            "ms",
            baseline=median_ms(docker_cli),
            baseline_name="docker run --rm, same image, command and settings",
            note="daemon's stage time stamps, median",
        ),
        Figure(
            "docker: stage / docker run --rm (median of the rounds' ratios)",
            _ratios(docker_stage, docker_cli),
            "x",
            RATIO_TARGET,
        ),
        Figure(
            "docker: the executor alone, in process",
            median_ms(in_process),
            "ms",
            baseline=median_ms(cli_again),
            baseline_name="docker run --rm, measured right after",
            note="DockerExecutor.run of the same request, median",
        ),
        Figure(
            "swarm: a stage of `true`",
            median_ms(swarm_stage),
            "ms",
            baseline=median_ms(swarm_cli),
            baseline_name="docker service create --mode replicated-job + rm, by hand",
            note="daemon's stage time stamps, median",
        ),
        Figure(
            "swarm: stage / job by hand (median of the rounds' ratios)",
            _ratios(swarm_stage, swarm_cli),
            "x",
            RATIO_TARGET,
        ),
        Figure(
            "swarm: the job by hand, create until complete (without rm)",
            median_ms(creates),
            "ms",
        ),
        Figure(
            "docker: stage output into its log",
            statistics.median(rates),
            "MB/s",
            THROUGHPUT_TARGET,
            higher_is_better=True,
            baseline=statistics.median(cli_rates),
            baseline_name="docker run --rm of the same command into a file",
            note=f"{size // MB} MB over the whole stage (container start included), median",
        ),
    ]
    return BenchResult(
        NAME,
        figures,
        parameters={
            "docker_rounds": docker_rounds,
            "swarm_rounds": swarm_rounds,
            "output_mb": size // MB,
            "output_rounds": throughput_rounds,
            "image": BASE_IMAGE,
        },
        samples=samples,
    )
