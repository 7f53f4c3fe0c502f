"""Build + push of a small busybox service through Conveyor (a real daemon, a
run with a ``build`` stage then a ``push`` stage) against ``docker build`` +
``docker push`` with the docker CLI (classic builder, ``DOCKER_BUILDKIT=0``,
as the engine here has no BuildKit) on the same context, alternating, in
one run.

Each round changes a file of the context for each side (each its own
content), so every build rebuilds its ``COPY`` and the steps after it and
every push sends new layers; the base image's layer is already in the
registry. The CLI gets the same work as Conveyor: the same labels (OCI
annotations and the run id) and as many tags, each pushed.

Overhead = Conveyor's wall time (submit to the run's final event, checkout
included) over the CLI's (build start to the last push's end), median of
the rounds' ratios. Needs the engine, the registry on 127.0.0.1:5000 and
the base image (``scripts/services.sh start``).

A daemon that does not record artifacts yet cannot hand its push stage the
image its build stage made; then the run has the build stage only and the
push runs through the same ``push`` kind in this process (noted in the
results as ``push_mode``).
"""

from __future__ import annotations

import dataclasses
import secrets
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import trio
import yaml

from bench.common import (
    BenchResult,
    Figure,
    get_run,
    ms,
    running_daemon,
    scratch_dir,
    seconds,
    submit,
    wait_finished,
)
from conveyor.plugin import ArtifactOutput, StageStatus
from conveyor.plugins.docker.push import PushStage
from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.docker import (
    DockerSandbox,
    daemon_records_artifacts,
    recorded,
    unavailable,
)
from tests.support.plugins import stage_context
from tests.support.repos import GitRepo, make_repo

NAME = "docker_build"
TARGET_PCT = 10.0
SERVICE_STEPS = (
    "RUN mkdir -p /srv/www && echo 'a small service' > /srv/www/name",
    "COPY app.txt /srv/www/app.txt",
    "RUN sha256sum /srv/www/app.txt > /srv/www/app.sha256",
    "EXPOSE 8080",
    'CMD ["httpd", "-f", "-p", "8080", "-h", "/srv/www"]',
)


def _pipeline(image: str, with_push: bool) -> str:
    stages: dict[str, Any] = {"image": {"uses": "build", "with": {"image": image}}}
    if with_push:
        stages["push"] = {"uses": "push", "needs": ["image"]}
    return yaml.safe_dump({"name": "docker-bench", "stages": stages}, sort_keys=False)


def _content(side: str, round_: int) -> str:
    return f"{side} round {round_} {secrets.token_hex(16)}\n"


# -- Conveyor ---------------------------------------------------------------------------


def _built_artifact(run_id: str) -> tuple[str, list[str], int]:
    """The image a run's build stage made: id, ``repo:tag`` names, size."""
    api = docker.APIClient()
    try:
        [image] = api.images(filters={"label": f"dev.conveyor.run={run_id}"})
        return image["Id"], list(image["RepoTags"]), int(image["Size"])
    finally:
        api.close()


async def _push_in_process(workspace: Path, home: Path, run_id: str) -> float:
    """Push a run's image with the ``push`` kind, as the daemon would; seconds."""
    digest, names, size = _built_artifact(run_id)
    name = names[0].rsplit(":", 1)[0]
    tags = tuple(sorted(n.rsplit(":", 1)[1] for n in names))
    ctx, _ = stage_context({"uses": "push"}, workspace, home)
    output = ArtifactOutput(kind="oci-image", name=name, digest=digest, size=size, tags=tags)
    ctx = dataclasses.replace(ctx, artifacts=(recorded(ctx, output),))
    start = time.perf_counter()
    outcome = await PushStage().run(ctx)
    elapsed = time.perf_counter() - start
    if outcome.status is not StageStatus.SUCCEEDED:
        raise RuntimeError(f"push failed: {outcome.reason}")
    return elapsed


def _conveyor_round(
    daemon: DaemonProcess, repo: GitRepo, root: Path, content: str, through_daemon: bool
) -> dict[str, float]:
    repo.commit({"app.txt": content})
    t0 = time.perf_counter()
    run = submit(daemon, repo.path)
    t_end = wait_finished(daemon, run.id)
    record = get_run(daemon, run.id)
    if record.status != runs_pb2.RUN_STATUS_SUCCEEDED:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in record.stages)
        raise RuntimeError(f"run {run.id} ended {record.status}: {record.reason} ({reasons})")
    image = stage(record, "image")
    result = {
        "wall": t_end - t0,
        "build_stage": seconds(image.finished_at) - seconds(image.started_at),
    }
    if through_daemon:
        push = stage(record, "push")
        result["push_stage"] = seconds(push.finished_at) - seconds(push.started_at)
    else:
        workspace = root / "push-ws" / run.id
        workspace.mkdir(parents=True)
        pushed = trio.run(_push_in_process, workspace, root / "push-home" / run.id, run.id)
        result["push_stage"] = pushed
        result["wall"] += pushed
    result["outside_stages"] = result["wall"] - result["build_stage"] - result["push_stage"]
    return result


# -- the docker CLI -----------------------------------------------------------------------


def _docker(argv: list[str], log: Path) -> None:
    env = {"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    with log.open("ab") as out:
        subprocess.run(["docker", *argv], stdout=out, stderr=out, env=env, check=True)


def _cli_round(
    context: Path, image: str, content: str, round_: int, tag_count: int
) -> dict[str, float]:
    (context / "app.txt").write_text(content)
    commit = secrets.token_hex(20)
    version = f"0.0.0-rc.{round_}+sha.{commit[:12]}"
    tags = [version.replace("+", "_"), f"sha-{commit[:12]}"][-tag_count:]
    labels = {
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.source": f"file://{context}",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dev.conveyor.run": f"cli-{round_}",
    }
    argv = ["build", "--rm", "--force-rm"]
    for tag in tags:
        argv += ["-t", f"{image}:{tag}"]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    log = context.parent / "cli.log"
    t0 = time.perf_counter()
    _docker([*argv, str(context)], log)
    t1 = time.perf_counter()
    for tag in tags:
        _docker(["push", f"{image}:{tag}"], log)
    t2 = time.perf_counter()
    return {"wall": t2 - t0, "build": t1 - t0, "push": t2 - t1}


# -- the benchmark --------------------------------------------------------------------------


def run(quick: bool) -> BenchResult:
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(f"needs the Docker engine and registry: {reason}")
    rounds = 3 if quick else 12
    through_daemon = daemon_records_artifacts()
    sandbox = DockerSandbox()
    conveyor_image, cli_image = sandbox.image("conveyor"), sandbox.image("cli")
    dockerfile = sandbox.dockerfile(*SERVICE_STEPS)
    conveyor: list[dict[str, float]] = []
    cli: list[dict[str, float]] = []
    try:
        with scratch_dir() as root:
            repo = make_repo(
                root / "repo",
                {
                    "conveyor.yaml": _pipeline(conveyor_image, through_daemon),
                    "Dockerfile": dockerfile,
                    "app.txt": "initial\n",
                },
            )
            context = root / "cli" / "context"
            context.mkdir(parents=True)
            (context / "Dockerfile").write_text(dockerfile)
            with running_daemon(root / "home") as daemon:
                # Warm-up, not counted: imports, the builder's cache of the
                # steps before COPY, the base layer in both repositories.
                _conveyor_round(daemon, repo, root, _content("conveyor", -1), through_daemon)
                tag_count = len(_built_artifact_tags(conveyor_image))
                _cli_round(context, cli_image, _content("cli", -1), 0, tag_count)
                for round_ in range(rounds):
                    # alternate which goes first, so drift hits both alike
                    if round_ % 2 == 0:
                        conveyor.append(
                            _conveyor_round(
                                daemon, repo, root, _content("conveyor", round_), through_daemon
                            )
                        )
                    cli.append(
                        _cli_round(
                            context, cli_image, _content("cli", round_), round_ + 1, tag_count
                        )
                    )
                    if round_ % 2 == 1:
                        conveyor.append(
                            _conveyor_round(
                                daemon, repo, root, _content("conveyor", round_), through_daemon
                            )
                        )
    finally:
        sandbox.cleanup()

    def col(rows: list[dict[str, float]], key: str) -> list[float]:
        return [row[key] for row in rows]

    def med_ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    ratios = [c["wall"] / b["wall"] for c, b in zip(conveyor, cli, strict=True)]
    overhead_pct = (statistics.median(ratios) - 1) * 100
    cli_wall = med_ms(col(cli, "wall"))
    of_medians_pct = (med_ms(col(conveyor, "wall")) / cli_wall - 1) * 100
    push_mode = "push stage in the run" if through_daemon else "push kind in-process"
    figures = [
        Figure(
            "overhead vs docker CLI (build + push)",
            overhead_pct,
            "%",
            TARGET_PCT,
            note="median over rounds of Conveyor wall / CLI wall, minus 1",
        ),
        Figure(
            "overhead vs docker CLI, ratio of the medians",
            of_medians_pct,
            "%",
            note="median Conveyor wall / median CLI wall, minus 1",
        ),
        Figure(
            "build + push through Conveyor (submit to final event)",
            med_ms(col(conveyor, "wall")),
            "ms",
            baseline=cli_wall,
            baseline_name="docker build + docker push",
            note=push_mode,
        ),
        Figure("baseline: docker build + docker push (CLI)", cli_wall, "ms"),
        Figure(
            "build stage (daemon records)",
            med_ms(col(conveyor, "build_stage")),
            "ms",
            baseline=med_ms(col(cli, "build")),
            baseline_name="docker build",
        ),
        Figure(
            "push stage",
            med_ms(col(conveyor, "push_stage")),
            "ms",
            baseline=med_ms(col(cli, "push")),
            baseline_name="docker push x tags",
        ),
        Figure(
            "run outside the stages (submit, queue, checkout, close-out, events)",
            med_ms(col(conveyor, "outside_stages")),
            "ms",
        ),
    ]
    return BenchResult(
        name=NAME,
        figures=figures,
        parameters={
            "rounds": rounds,
            "tags_per_image": tag_count,
            "push_mode": push_mode,
            "dockerfile": dockerfile,
            "cli": "DOCKER_BUILDKIT=0 docker build --rm --force-rm -t ... --label ...; docker push"
            " per tag",
        },
        samples={
            "units": "ms",
            **{f"conveyor_{key}": ms(col(conveyor, key)) for key in conveyor[0]},
            **{f"cli_{key}": ms(col(cli, key)) for key in cli[0]},
            "ratios": [round(r, 4) for r in ratios],
        },
        summary={
            "overhead_pct": overhead_pct,
            "overhead_pct_ratio_of_medians": of_medians_pct,
            "target_pct": TARGET_PCT,
            "target_met": overhead_pct <= TARGET_PCT,
            "push_mode": push_mode,
        },
    )


def _built_artifact_tags(image: str) -> list[str]:
    """The tags a Conveyor build gives (how many the CLI side gets too)."""
    api = docker.APIClient()
    try:
        latest = max(api.images(name=image), key=lambda i: i["Created"])
        return [tag.rsplit(":", 1)[1] for tag in latest["RepoTags"]]
    finally:
        api.close()
