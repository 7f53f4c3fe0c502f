"""The ``push`` stage kind in-process, against the real engine and registries:
what is pushed and recorded, immutable version tags, logins, and registries
that cannot be reached or refuse the login."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from conveyor.plugin import Artifact, RegistryCredential, StageContext, StageStatus
from conveyor.plugins.docker.build import BuildStage
from conveyor.plugins.docker.push import PushStage
from tests.support.docker import (
    AuthRegistry,
    DockerSandbox,
    recorded,
    registry_manifest,
    registry_tags,
    write_context,
)
from tests.support.plugins import stage_context
from tests.support.ports import free_port

pytestmark = pytest.mark.docker

VERSION = "2.0.0"
COMMIT_TAG = "sha-cccccccccccc"  # stage_context's commit is "c" * 40


async def build(
    sandbox: DockerSandbox,
    tmp_path: Path,
    image: str,
    content: str,
    *,
    version: str = VERSION,
    name: str = "b",
) -> Artifact:
    """Build an image whose content is ``content``; the artifact as recorded."""
    workspace = write_context(
        tmp_path / name / "ws",
        {
            "Dockerfile": sandbox.dockerfile("COPY content.txt /content.txt"),
            "content.txt": content,
        },
    )
    ctx, _ = stage_context(
        {"uses": "build", "with": {"image": image}}, workspace, tmp_path / name / "home"
    )
    ctx = dataclasses.replace(ctx, version=version)
    outcome = await BuildStage().run(ctx)
    assert outcome.status is StageStatus.SUCCEEDED, outcome.reason
    return recorded(ctx, outcome.artifacts[0], version)


def push_context(
    tmp_path: Path,
    artifacts: tuple[Artifact, ...],
    with_: dict[str, Any] | None = None,
    logins: dict[str, RegistryCredential] | None = None,
    name: str = "push",
) -> StageContext:
    workspace = tmp_path / name / "ws"
    workspace.mkdir(parents=True)
    ctx, _ = stage_context(
        {"uses": "push", "with": with_ or {}}, workspace, tmp_path / name / "home"
    )
    known = logins or {}
    return dataclasses.replace(
        ctx, version=VERSION, artifacts=artifacts, credential_lookup=known.get
    )


def log_text(tmp_path: Path, name: str = "push") -> str:
    return (tmp_path / name / "home" / "logs" / "s.log").read_text()


async def test_push_sends_every_tag_and_records_the_manifest_digest(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    image = docker_sandbox.image()
    artifact = await build(docker_sandbox, tmp_path, image, "one")
    outcome = await PushStage().run(push_context(tmp_path, (artifact,)))

    assert outcome.status is StageStatus.SUCCEEDED, outcome.reason
    [pushed] = outcome.artifacts
    assert (pushed.digest, pushed.name, pushed.tags) == (artifact.digest, image, artifact.tags)
    assert pushed.pushed_to == image
    assert pushed.manifest_digest.startswith("sha256:")
    assert registry_tags("127.0.0.1:5000", docker_sandbox.path()) == {
        VERSION: artifact.digest,
        COMMIT_TAG: artifact.digest,
    }
    found = registry_manifest("127.0.0.1:5000", docker_sandbox.path(), VERSION)
    assert found == (pushed.manifest_digest, artifact.digest)
    assert outcome.span_attributes == {
        "container.image.name": image,
        "container.image.tags": [VERSION, COMMIT_TAG],
        "artifact.hash": artifact.digest,
        "artifact.version": VERSION,
        "oci.manifest.digest": pushed.manifest_digest,
    }
    text = log_text(tmp_path)
    assert f"The push refers to repository [{image}]" in text
    assert f"{VERSION}: digest: {pushed.manifest_digest}" in text


async def test_push_picks_the_image_named_and_pushes_it_again_unchanged(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    app = await build(docker_sandbox, tmp_path, docker_sandbox.image("app"), "app", name="app")
    worker = await build(
        docker_sandbox, tmp_path, docker_sandbox.image("worker"), "worker", name="worker"
    )
    with_ = {"image": docker_sandbox.image("worker")}
    first = await PushStage().run(push_context(tmp_path, (app, worker), with_, name="p1"))
    assert first.status is StageStatus.SUCCEEDED, first.reason
    assert [o.name for o in first.artifacts] == [worker.name]
    assert registry_tags("127.0.0.1:5000", docker_sandbox.path("app")) == {}
    # The same digest under the same tags again: allowed, same manifest.
    again = await PushStage().run(push_context(tmp_path, (app, worker), with_, name="p2"))
    assert again.status is StageStatus.SUCCEEDED, again.reason
    assert again.artifacts[0].manifest_digest == first.artifacts[0].manifest_digest


async def test_a_version_tag_naming_another_image_is_refused_and_nothing_is_pushed(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    image = docker_sandbox.image()
    first = await build(docker_sandbox, tmp_path, image, "first", name="first")
    pushed = await PushStage().run(push_context(tmp_path, (first,), name="p1"))
    assert pushed.status is StageStatus.SUCCEEDED, pushed.reason
    before = registry_tags("127.0.0.1:5000", docker_sandbox.path())

    # Another build of the same version (other content, so another digest)
    # and another commit tag: the version tag must not move.
    second = await build(docker_sandbox, tmp_path, image, "second", name="second")
    second = dataclasses.replace(second, tags=(VERSION, "sha-dddddddddddd"))
    refused = await PushStage().run(push_context(tmp_path, (second,), name="p2"))
    assert refused.status is StageStatus.FAILED
    assert refused.error_type == "tag_exists"
    assert refused.reason == (
        f"refused to move 1 tag(s) to another image ({image}:{VERSION} already names"
        f" {first.digest} in the registry, not {second.digest}); nothing was pushed"
        " (set with.overwrite_tags: true to allow it)"
    )
    assert not refused.artifacts
    assert registry_tags("127.0.0.1:5000", docker_sandbox.path()) == before
    assert "already names" in log_text(tmp_path, "p2")

    allowed = await PushStage().run(
        push_context(tmp_path, (second,), {"overwrite_tags": True}, name="p3")
    )
    assert allowed.status is StageStatus.SUCCEEDED, allowed.reason
    assert registry_tags("127.0.0.1:5000", docker_sandbox.path()) == {
        VERSION: second.digest,
        COMMIT_TAG: first.digest,
        "sha-dddddddddddd": second.digest,
    }


async def test_a_commit_tag_moves_to_the_newest_build_of_the_commit(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    image = docker_sandbox.image()
    first = await build(
        docker_sandbox, tmp_path, image, "first", version="2.0.0-rc.1", name="first"
    )
    assert (await PushStage().run(push_context(tmp_path, (first,), name="p1"))).status is (
        StageStatus.SUCCEEDED
    )
    second = await build(
        docker_sandbox, tmp_path, image, "second", version="2.0.0-rc.2", name="second"
    )
    outcome = await PushStage().run(push_context(tmp_path, (second,), name="p2"))
    assert outcome.status is StageStatus.SUCCEEDED, outcome.reason
    assert registry_tags("127.0.0.1:5000", docker_sandbox.path()) == {
        "2.0.0-rc.1": first.digest,
        "2.0.0-rc.2": second.digest,
        COMMIT_TAG: second.digest,
    }


async def test_push_without_a_built_image_fails_with_what_to_do(tmp_path: Path) -> None:
    outcome = await PushStage().run(push_context(tmp_path, ()))
    assert outcome.status is StageStatus.FAILED
    assert outcome.reason == (
        "no image to push: no earlier stage of this run recorded one (add the build"
        " stage to this stage's needs)"
    )


async def test_push_of_an_image_the_run_did_not_build_names_what_it_built(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    artifact = await build(docker_sandbox, tmp_path, docker_sandbox.image(), "x")
    with_ = {"image": "127.0.0.1:5000/elsewhere/app"}
    outcome = await PushStage().run(push_context(tmp_path, (artifact,), with_))
    assert outcome.status is StageStatus.FAILED
    assert outcome.reason.startswith(
        f"with.image: this run recorded no image of '127.0.0.1:5000/elsewhere/app'"
        f" (images: {artifact.name})"
    )


async def test_an_unreachable_registry_fails_the_stage_and_nothing_is_recorded(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    registry = f"127.0.0.1:{free_port()}"  # nothing listens there
    artifact = await build(docker_sandbox, tmp_path, docker_sandbox.image(registry=registry), "x")
    outcome = await PushStage().run(push_context(tmp_path, (artifact,)))
    assert outcome.status is StageStatus.FAILED
    assert outcome.error_type == "registry_error"
    assert outcome.reason == f"registry {registry} is unreachable: connection refused"
    assert not outcome.artifacts
    assert outcome.reason in log_text(tmp_path)


async def test_an_image_gone_from_the_engine_fails_the_push_clearly(
    docker_sandbox: DockerSandbox, tmp_path: Path
) -> None:
    artifact = await build(docker_sandbox, tmp_path, docker_sandbox.image(), "x")
    gone = dataclasses.replace(artifact, digest="sha256:" + "0" * 64)
    outcome = await PushStage().run(push_context(tmp_path, (gone,)))
    assert outcome.status is StageStatus.FAILED
    assert outcome.reason == (
        f"image sha256:{'0' * 64} ({artifact.name}) is no longer in the Docker engine"
    )
    assert registry_tags("127.0.0.1:5000", docker_sandbox.path()) == {}


# -- a registry that wants a login ------------------------------------------------------


@pytest.fixture
def auth_sandbox(docker_sandbox: DockerSandbox, auth_registry: AuthRegistry) -> DockerSandbox:
    docker_sandbox.registries[auth_registry.address] = auth_registry.login
    return docker_sandbox


async def test_a_login_named_by_the_stage_pushes_to_a_registry_that_wants_one(
    auth_sandbox: DockerSandbox, auth_registry: AuthRegistry, tmp_path: Path
) -> None:
    artifact = await build(
        auth_sandbox, tmp_path, auth_sandbox.image(registry=auth_registry.address), "x"
    )
    login = RegistryCredential(auth_registry.address, *auth_registry.login)
    ctx = push_context(tmp_path, (artifact,), {"credentials": "ci"}, {"ci": login})
    outcome = await PushStage().run(ctx)
    assert outcome.status is StageStatus.SUCCEEDED, outcome.reason
    tags = registry_tags(auth_registry.address, auth_sandbox.path(), auth_registry.login)
    assert tags == {VERSION: artifact.digest, COMMIT_TAG: artifact.digest}
    assert auth_registry.password not in log_text(tmp_path)


async def test_the_docker_config_of_the_daemons_user_is_the_default_login(
    auth_sandbox: DockerSandbox,
    auth_registry: AuthRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    artifact = await build(
        auth_sandbox, tmp_path, auth_sandbox.image(registry=auth_registry.address), "x"
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(auth_registry.docker_config(tmp_path / "docker")))
    outcome = await PushStage().run(push_context(tmp_path, (artifact,)))
    assert outcome.status is StageStatus.SUCCEEDED, outcome.reason
    assert registry_tags(auth_registry.address, auth_sandbox.path(), auth_registry.login)


@pytest.mark.parametrize(
    ("logins", "with_", "reason"),
    [
        ({}, {}, "registry {registry} needs a login: give the stage 'with.credentials'"),
        (
            {"ci": ("conveyor", "wrong")},
            {"credentials": "ci"},
            "registry {registry} refused the credentials (user 'conveyor')",
        ),
        ({}, {"credentials": "ci"}, "with.credentials: the daemon has no registry login 'ci'"),
    ],
    ids=["no-login", "wrong-password", "unknown-login"],
)
async def test_a_missing_or_wrong_login_fails_the_stage_and_nothing_is_pushed(
    auth_sandbox: DockerSandbox,
    auth_registry: AuthRegistry,
    tmp_path: Path,
    logins: dict[str, tuple[str, str]],
    with_: dict[str, str],
    reason: str,
) -> None:
    artifact = await build(
        auth_sandbox, tmp_path, auth_sandbox.image(registry=auth_registry.address), "x"
    )
    credentials = {
        name: RegistryCredential(auth_registry.address, *pair) for name, pair in logins.items()
    }
    outcome = await PushStage().run(push_context(tmp_path, (artifact,), with_, credentials))
    assert outcome.status is StageStatus.FAILED
    assert outcome.reason.startswith(reason.format(registry=auth_registry.address))
    assert not outcome.artifacts
    tags = registry_tags(auth_registry.address, auth_sandbox.path(), auth_registry.login)
    assert tags == {}


async def test_a_login_is_never_sent_to_another_registry(
    docker_sandbox: DockerSandbox, auth_registry: AuthRegistry, tmp_path: Path
) -> None:
    artifact = await build(docker_sandbox, tmp_path, docker_sandbox.image(), "x")
    login = RegistryCredential(auth_registry.address, *auth_registry.login)
    ctx = push_context(tmp_path, (artifact,), {"credentials": "ci"}, {"ci": login})
    outcome = await PushStage().run(ctx)
    assert outcome.status is StageStatus.FAILED
    assert outcome.reason == (
        f"with.credentials: login 'ci' is for registry {auth_registry.address}, not"
        " 127.0.0.1:5000; it is not sent elsewhere"
    )
