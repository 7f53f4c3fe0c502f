"""The ``build`` stage kind in-process, against the real Docker engine: the
image, its tags and labels, the artifact, the builder's output in the log,
failures, and a cancelled build that leaves nothing behind."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import docker
import pytest
import trio

from conveyor.plugin import OCI_IMAGE, StageContext, StageStatus
from conveyor.plugins.docker.build import BuildStage
from tests.support.docker import DockerSandbox, image_labels, recorded, write_context
from tests.support.plugins import stage_context

pytestmark = pytest.mark.docker

VERSION = "1.2.0-rc.7+sha.cccccccccccc"
COMMIT_TAG = "sha-cccccccccccc"  # stage_context's commit is "c" * 40


def build_context(
    workspace: Path, home: Path, with_: Mapping[str, object], version: str = VERSION
) -> StageContext:
    ctx, _ = stage_context({"uses": "build", "with": with_}, workspace, home)
    return dataclasses.replace(ctx, version=version)


def log_text(home: Path) -> str:
    return (home / "logs" / "s.log").read_text()


def processes_with(word: str) -> list[str]:
    """Command lines of the machine's processes that contain ``word``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if word in text:
            found.append(text)
    return found


async def test_build_tags_labels_and_returns_the_image_as_an_artifact(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    workspace = write_context(
        tmp_path / "ws",
        {
            "Dockerfile": docker_sandbox.dockerfile(
                f"RUN echo {docker_sandbox.marker} > /built", "COPY app.txt /app.txt"
            ),
            "app.txt": "hello\n",
        },
    )
    image = docker_sandbox.image()
    ctx = build_context(
        workspace, tmp_path / "home", {"image": image, "labels": {"com.example.team": "qa"}}
    )
    outcome = await BuildStage().run(ctx)

    assert outcome.status is StageStatus.SUCCEEDED, outcome.reason
    [artifact] = outcome.artifacts
    version_tag = "1.2.0-rc.7_sha.cccccccccccc"
    assert artifact.kind == OCI_IMAGE and artifact.name == image
    assert artifact.tags == (version_tag, COMMIT_TAG)
    assert artifact.digest.startswith("sha256:") and len(artifact.digest) == 71
    api = docker.APIClient()
    try:
        details = api.inspect_image(artifact.digest)  # type: ignore[no-untyped-call]
    finally:
        api.close()
    assert artifact.size == details["Size"] > 0
    assert sorted(details["RepoTags"]) == sorted(f"{image}:{tag}" for tag in artifact.tags)
    assert artifact.attributes == {"context": ".", "dockerfile": "Dockerfile", "target": ""}
    labels = image_labels(artifact.digest)
    assert labels["org.opencontainers.image.revision"] == "c" * 40
    assert labels["org.opencontainers.image.source"] == "file:///srv/repo"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["dev.conveyor.run"] == ctx.run.id
    assert labels["com.example.team"] == "qa"
    created = datetime.fromisoformat(labels["org.opencontainers.image.created"])
    assert created.tzinfo is not None
    assert outcome.span_attributes == {
        "container.image.name": image,
        "container.image.tags": [version_tag, COMMIT_TAG],
        "artifact.hash": artifact.digest,
        "artifact.version": VERSION,
    }
    text = log_text(tmp_path / "home")
    assert "Step 1/" in text and f"RUN echo {docker_sandbox.marker}" in text
    assert f"built {artifact.digest}" in text
    assert docker_sandbox.containers() == [], "intermediate containers are removed"


async def test_without_a_version_the_image_gets_the_commit_tag_only(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    workspace = write_context(tmp_path / "ws", {"Dockerfile": docker_sandbox.dockerfile()})
    ctx = build_context(workspace, tmp_path / "home", {"image": docker_sandbox.image()}, "")
    outcome = await BuildStage().run(ctx)
    assert outcome.status is StageStatus.SUCCEEDED, outcome.reason
    assert outcome.artifacts[0].tags == (COMMIT_TAG,)
    assert "artifact.version" not in outcome.span_attributes
    assert "org.opencontainers.image.version" not in image_labels(outcome.artifacts[0].digest)


async def test_context_dockerfile_target_and_build_args_are_used(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    dockerfile = docker_sandbox.dockerfile(
        "ARG GREETING",
        "LABEL greeting=$GREETING",
        "COPY inside.txt /inside.txt",
        "FROM base AS runtime",
        "LABEL stage=runtime",
        "FROM base AS other",
        "LABEL stage=other",
        stage="base",
    )
    workspace = write_context(
        tmp_path / "ws",
        {"docker/Dockerfile": dockerfile, "app/inside.txt": "in the context\n"},
    )
    with_ = {
        "image": docker_sandbox.image(),
        "context": "app",
        "dockerfile": "docker/Dockerfile",
        "target": "runtime",
        "build_args": {"GREETING": "hello"},
    }
    outcome = await BuildStage().run(build_context(workspace, tmp_path / "home", with_))
    assert outcome.status is StageStatus.SUCCEEDED, outcome.reason
    labels = image_labels(outcome.artifacts[0].digest)
    assert (labels["greeting"], labels["stage"]) == ("hello", "runtime")
    assert outcome.artifacts[0].attributes == {
        "context": "app",
        "dockerfile": "docker/Dockerfile",
        "target": "runtime",
    }


async def test_a_failing_build_fails_the_stage_with_the_builders_error(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    workspace = write_context(
        tmp_path / "ws",
        {"Dockerfile": docker_sandbox.dockerfile(f"RUN echo {docker_sandbox.marker} && exit 3")},
    )
    ctx = build_context(workspace, tmp_path / "home", {"image": docker_sandbox.image()})
    outcome = await BuildStage().run(ctx)
    assert outcome.status is StageStatus.FAILED
    assert outcome.error_type == "build_failed"
    assert outcome.reason.startswith("docker build failed: The command '/bin/sh -c echo")
    assert "returned a non-zero code: 3" in outcome.reason
    assert not outcome.artifacts
    text = log_text(tmp_path / "home")
    assert "returned a non-zero code: 3" in text
    assert docker_sandbox.containers() == [], "the failed step's container is removed"
    assert docker_sandbox.tags() == []


async def test_a_dockerfile_the_builder_cannot_parse_fails_with_its_message(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    workspace = write_context(
        tmp_path / "ws", {"Dockerfile": docker_sandbox.dockerfile("FROBNICATE")}
    )
    ctx = build_context(workspace, tmp_path / "home", {"image": docker_sandbox.image()})
    outcome = await BuildStage().run(ctx)
    assert outcome.status is StageStatus.FAILED
    assert outcome.reason.startswith("docker build failed:")
    assert "frobnicate" in outcome.reason.lower()
    assert outcome.reason in log_text(tmp_path / "home")


async def test_an_unknown_target_fails_the_stage(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    workspace = write_context(
        tmp_path / "ws", {"Dockerfile": docker_sandbox.dockerfile(stage="base")}
    )
    with_ = {"image": docker_sandbox.image(), "target": "nowhere"}
    outcome = await BuildStage().run(build_context(workspace, tmp_path / "home", with_))
    assert outcome.status is StageStatus.FAILED
    assert "nowhere" in outcome.reason


@pytest.mark.parametrize(
    ("files", "with_", "reason"),
    [
        ({"README": "no Dockerfile\n"}, {}, "no Dockerfile at 'Dockerfile' in the commit"),
        (
            {"Dockerfile": "FROM x\n"},
            {"dockerfile": "docker/Dockerfile"},
            "no Dockerfile at 'docker/Dockerfile' in the commit",
        ),
        ({"Dockerfile": "FROM x\n"}, {"context": "app"}, "no folder 'app' in the commit"),
    ],
)
async def test_a_missing_dockerfile_or_context_fails_with_a_clear_reason(
    tmp_path: Path, files: dict[str, str], with_: dict[str, str], reason: str
) -> None:
    workspace = write_context(tmp_path / "ws", files)
    ctx = build_context(workspace, tmp_path / "home", {"image": "127.0.0.1:5000/t/app", **with_})
    outcome = await BuildStage().run(ctx)
    assert outcome.status is StageStatus.FAILED
    assert reason in outcome.reason
    assert reason in log_text(tmp_path / "home")


@pytest.mark.parametrize("name", ["context", "dockerfile"])
async def test_a_symbolic_link_out_of_the_checkout_is_refused(tmp_path: Path, name: str) -> None:
    outside = write_context(tmp_path / "outside", {"Dockerfile": "FROM scratch\n"})
    workspace = write_context(tmp_path / "ws", {"README": "x\n"})
    target = outside if name == "context" else outside / "Dockerfile"
    (workspace / "link").symlink_to(target)
    with_ = {"image": "127.0.0.1:5000/t/app", name: "link"}
    outcome = await BuildStage().run(build_context(workspace, tmp_path / "home", with_))
    assert outcome.status is StageStatus.FAILED
    assert (
        outcome.reason
        == f"with.{name}: 'link' leads outside the checkout (through a symbolic link)"
    )


async def test_an_unreachable_engine_fails_the_stage_with_its_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    workspace = write_context(tmp_path / "ws", {"Dockerfile": "FROM scratch\n"})
    ctx = build_context(workspace, tmp_path / "home", {"image": "127.0.0.1:5000/t/app"})
    outcome = await BuildStage().run(ctx)
    assert outcome.status is StageStatus.FAILED and outcome.system_error
    assert outcome.reason.startswith(
        f"cannot reach the Docker engine at unix://{tmp_path}/no-docker.sock:"
    )


async def test_a_cancelled_build_stops_in_the_engine_and_leaves_no_container(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    started = f"{docker_sandbox.marker}-started"
    workspace = write_context(
        tmp_path / "ws",
        {"Dockerfile": docker_sandbox.dockerfile(f"RUN echo {started} && sleep 30")},
    )
    home = tmp_path / "home"
    ctx = build_context(workspace, home, {"image": docker_sandbox.image()})
    log = trio.Path(home / "logs" / "s.log")
    finished: list[object] = []

    async def build(scope: trio.CancelScope) -> None:
        with scope:
            finished.append(await BuildStage().run(ctx))

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(build, scope)
        # The builder's output reaches the log while the build runs (and the
        # loop is free: this task polls it).
        with trio.fail_after(60):
            while True:
                if await log.exists() and f"\n{started}\n" in await log.read_text():
                    break
                await trio.sleep(0.05)
        assert docker_sandbox.containers(), "the RUN step's container is running"
        scope.cancel()

    assert finished == [], "the build was cancelled, not finished"
    assert docker_sandbox.containers() == []
    assert processes_with(started) == []
    assert docker_sandbox.tags() == []


async def test_artifact_available_says_whether_the_engine_still_has_the_image(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    workspace = write_context(tmp_path / "ws", {"Dockerfile": docker_sandbox.dockerfile()})
    ctx = build_context(workspace, tmp_path / "home", {"image": docker_sandbox.image()})
    kind = BuildStage()
    outcome = await kind.run(ctx)
    assert outcome.status is StageStatus.SUCCEEDED, outcome.reason
    artifact = recorded(ctx, outcome.artifacts[0], VERSION)
    assert await kind.artifact_available(artifact)
    api = docker.APIClient()
    try:
        api.remove_image(artifact.digest, force=True)
    finally:
        api.close()
    assert not await kind.artifact_available(artifact)
