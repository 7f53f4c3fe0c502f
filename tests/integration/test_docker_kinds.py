"""The ``build`` and ``push`` stage kinds through a real daemon, with real git
repositories, the real Docker engine and real registries."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.plugins.docker.references import docker_tag
from conveyor.v1 import pipelines_pb2, runs_pb2, server_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.docker import (
    REGISTRY,
    AuthRegistry,
    DockerSandbox,
    daemon_records_artifacts,
    image_labels,
    registry_tags,
)
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.plugins import write_distribution
from tests.support.repos import GitRepo

SUCCEEDED = runs_pb2.STAGE_STATUS_SUCCEEDED
RepoFactory = Callable[..., GitRepo]
needs_artifact_records = pytest.mark.skipif(
    not daemon_records_artifacts(),
    reason="this daemon does not record artifacts yet, so a push stage has no image to push",
)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def conveyord(
    docker_engine: None, auth_registry: AuthRegistry, receiver: OtlpReceiver
) -> Iterator[DaemonProcess]:
    """One daemon for the module: spans to ``receiver``, and a login ``ci``
    for the registry that wants one."""
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))  # short: a unix socket lives there
    secret = home / "registry.password"
    secret.write_text(auth_registry.password + "\n")
    secret.chmod(0o600)
    (home / "conveyord.toml").write_text(
        "[registry_credentials.ci]\n"
        f'registry = "{auth_registry.address}"\n'
        f'username = "{auth_registry.username}"\n'
        f'password_file = "{secret}"\n'
    )
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    proc = DaemonProcess(home, args=["--kill-grace", "1"], env=env).start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(home, ignore_errors=True)


def stage_span(receiver: OtlpReceiver, run_id: str, name: str) -> ReceivedSpan:
    def find(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
        for span in spans:
            if span.attributes.get("cicd.pipeline.task.run.id") == f"{run_id}/{name}":
                return span
        return None

    found = find(receiver.wait_for(lambda spans: find(spans) is not None))
    assert found is not None
    return found


def test_build_and_push_are_built_in_plugins(conveyord: DaemonProcess) -> None:
    reply = conveyord.stub.ListPlugins(server_pb2.ListPluginsRequest(), timeout=10)
    plugins = {p.name: p for p in reply.plugins}
    for kind in ("build", "push"):
        assert list(plugins[kind].provides) == [f"stage kind: {kind}"]
        assert plugins[kind].distribution == "conveyor-plugins" and not plugins[kind].error


def test_a_build_stage_builds_the_commit_into_a_tagged_labelled_image(
    conveyord: DaemonProcess,
    receiver: OtlpReceiver,
    docker_sandbox: DockerSandbox,
    repo_factory: RepoFactory,
) -> None:
    image = docker_sandbox.image()
    repo = repo_factory(
        {
            "conveyor.yaml": f"name: docker-build\nstages:\n  image:\n    uses: build\n"
            f"    with: {{image: {image}}}\n",
            "Dockerfile": docker_sandbox.dockerfile("COPY app.txt /app.txt"),
            "app.txt": "the app\n",
        }
    )
    run = conveyord.wait(conveyord.submit(repo.path).id)
    built = stage(run, "image")
    assert (run.status, built.status) == (runs_pb2.RUN_STATUS_SUCCEEDED, SUCCEEDED), built.reason

    span = stage_span(receiver, run.id, "image").attributes
    digest = span["artifact.hash"]
    tags = [f"sha-{run.commit[:12]}"]
    if span.get("artifact.version"):  # the daemon gives the run a version
        tags.insert(0, docker_tag(span["artifact.version"]))
    assert span["container.image.name"] == image
    assert span["container.image.tags"] == list(tags)
    assert span["cicd.pipeline.task.type"] == "build"
    assert built.reason == f"built {image}:{tags[0]}"
    labels = image_labels(digest)
    assert labels["dev.conveyor.run"] == run.id
    assert labels["org.opencontainers.image.revision"] == run.commit
    assert labels["org.opencontainers.image.source"] == repo.path.as_uri()
    for tag in tags:
        assert image_labels(f"{image}:{tag}") == labels
    log = conveyord.logs(run.id, "image").decode()
    assert "Step 1/" in log and "COPY app.txt /app.txt" in log
    assert f"built {digest}" in log


def test_a_dockerfile_that_fails_fails_the_stage_with_the_builders_error(
    conveyord: DaemonProcess, docker_sandbox: DockerSandbox, repo_factory: RepoFactory
) -> None:
    repo = repo_factory(
        {
            "conveyor.yaml": "name: docker-broken\nstages:\n  image:\n    uses: build\n"
            f"    with: {{image: {docker_sandbox.image()}}}\n",
            "Dockerfile": docker_sandbox.dockerfile("RUN echo compiling && exit 7"),
        }
    )
    run = conveyord.wait(conveyord.submit(repo.path).id)
    failed = stage(run, "image")
    assert failed.status == runs_pb2.STAGE_STATUS_FAILED
    assert failed.reason.startswith("docker build failed: The command '/bin/sh -c echo compiling")
    assert failed.reason.endswith("returned a non-zero code: 7")
    log = conveyord.logs(run.id, "image").decode()
    assert "compiling\n" in log and "returned a non-zero code: 7" in log
    assert docker_sandbox.containers() == []


def test_cancelling_a_run_mid_build_stops_the_build_and_leaves_no_container(
    conveyord: DaemonProcess, docker_sandbox: DockerSandbox, repo_factory: RepoFactory
) -> None:
    started = f"{docker_sandbox.marker}-started"
    repo = repo_factory(
        {
            "conveyor.yaml": "name: docker-cancel\nstages:\n  image:\n    uses: build\n"
            f"    with: {{image: {docker_sandbox.image()}}}\n",
            "Dockerfile": docker_sandbox.dockerfile(f"RUN echo {started} && sleep 60"),
        }
    )
    run = conveyord.submit(repo.path)
    conveyord.wait_for_stage(run.id, "image")
    chunks = conveyord.stub.StreamLogs(
        runs_pb2.StreamLogsRequest(run_id=run.id, stage="image", follow=True), timeout=60
    )
    seen = b""
    for chunk in chunks:
        seen += chunk.data
        if f"\n{started}\n".encode() in seen:
            break
    chunks.cancel()  # type: ignore[no-untyped-call]
    assert docker_sandbox.containers(), "the RUN step is running"

    conveyord.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="stop the build"))
    final = conveyord.wait(run.id)
    assert final.status == runs_pb2.RUN_STATUS_CANCELLED
    assert stage(final, "image").status == runs_pb2.STAGE_STATUS_CANCELLED
    assert docker_sandbox.containers() == []
    assert docker_sandbox.tags() == []


@pytest.mark.parametrize(
    ("stage_yaml", "line", "field", "words"),
    [
        (
            "uses: build\n    with: {image: 127.0.0.1:5000/a, context: ../outside}",
            5,
            "stages.s.with.context",
            "must stay inside the repository",
        ),
        (
            "uses: build\n    with:\n      image: 127.0.0.1:5000/a\n"
            "      dockerfile: /srv/Dockerfile",
            7,
            "stages.s.with.dockerfile",
            "must be relative to the repository root",
        ),
        (
            "uses: build\n    with: {image: '127.0.0.1:5000/a:1.0'}",
            5,
            "stages.s.with.image",
            "without a tag",
        ),
        (
            "uses: push\n    with: {password: hunter2}",
            5,
            "stages.s.with.password",
            "never written in the pipeline file",
        ),
    ],
)
def test_bad_parameters_are_reported_with_their_file_and_line(
    conveyord: DaemonProcess, stage_yaml: str, line: int, field: str, words: str
) -> None:
    content = f"name: bad\nstages:\n  s:\n    {stage_yaml}\n"
    reply = conveyord.stub.ValidatePipeline(
        pipelines_pb2.ValidatePipelineRequest(content=content, file="ci/conveyor.yaml"), timeout=10
    )
    assert not reply.valid
    found = [(d.file, d.line, d.path) for d in reply.diagnostics if words in d.message]
    assert ("ci/conveyor.yaml", line, field) in found, list(reply.diagnostics)


@needs_artifact_records
def test_a_build_then_push_run_pushes_the_image_and_records_the_manifest(
    conveyord: DaemonProcess,
    receiver: OtlpReceiver,
    docker_sandbox: DockerSandbox,
    repo_factory: RepoFactory,
) -> None:
    image = docker_sandbox.image()
    repo = repo_factory(
        {
            "conveyor.yaml": "name: docker-ship\nstages:\n"
            f"  image:\n    uses: build\n    with: {{image: {image}}}\n"
            "  push:\n    uses: push\n    needs: [image]\n",
            "Dockerfile": docker_sandbox.dockerfile(),
        }
    )
    run = conveyord.wait(conveyord.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED, [s.reason for s in run.stages]
    assert [stage(run, s).status for s in ("image", "push")] == [SUCCEEDED, SUCCEEDED]
    built = stage_span(receiver, run.id, "image").attributes
    pushed = stage_span(receiver, run.id, "push").attributes
    assert pushed["artifact.hash"] == built["artifact.hash"]
    assert pushed["container.image.tags"] == built["container.image.tags"]
    assert pushed["oci.manifest.digest"].startswith("sha256:")
    in_registry = registry_tags(REGISTRY, docker_sandbox.path())
    assert in_registry == dict.fromkeys(built["container.image.tags"], built["artifact.hash"])


@needs_artifact_records
def test_a_push_uses_the_login_the_daemon_holds(
    conveyord: DaemonProcess,
    auth_registry: AuthRegistry,
    docker_sandbox: DockerSandbox,
    repo_factory: RepoFactory,
) -> None:
    docker_sandbox.registries[auth_registry.address] = auth_registry.login
    image = docker_sandbox.image(registry=auth_registry.address)
    repo = repo_factory(
        {
            "conveyor.yaml": "name: docker-login\nstages:\n"
            f"  image:\n    uses: build\n    with: {{image: {image}}}\n"
            "  push:\n    uses: push\n    needs: [image]\n    with: {credentials: ci}\n",
            "Dockerfile": docker_sandbox.dockerfile(),
        }
    )
    run = conveyord.wait(conveyord.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED, [s.reason for s in run.stages]
    assert registry_tags(auth_registry.address, docker_sandbox.path(), auth_registry.login)
    assert auth_registry.password.encode() not in conveyord.logs(run.id, "push")


# -- the daemon hands its logins to stage kinds (no Docker needed) ----------------------

WHOAMI = """
import hashlib

from conveyor.plugin import StageOutcome, StageStatus, hookimpl


class WhoAmI:
    name = "whoami"
    description = "says which login the daemon holds under 'ci'"

    def validate(self, spec):
        return []

    async def run(self, ctx):
        login = ctx.credential("ci")
        if login is None:
            return StageOutcome(StageStatus.FAILED, "no login 'ci'")
        digest = hashlib.sha256(login.password.encode()).hexdigest()[:12]
        missing = ctx.credential("missing")
        return StageOutcome(
            StageStatus.SUCCEEDED, f"{login.registry} {login.username} {digest} {missing}"
        )


@hookimpl
def conveyor_stage_kinds():
    return [WhoAmI()]
"""


def test_the_daemon_hands_its_registry_logins_to_stage_kinds(
    daemon_home: Path, tmp_path: Path, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    site = tmp_path / "site"
    write_distribution(site, "whoami", {"whoami": "whoami_plugin"}, {"whoami_plugin": WHOAMI})
    secret = tmp_path / "password"
    secret.write_text("correct horse\n")
    (daemon_home / "conveyord.toml").write_text(
        '[registry_credentials.ci]\nregistry = "registry.example:5000"\n'
        f'username = "robot"\npassword_file = "{secret}"\n'
    )
    daemon = DaemonProcess(daemon_home, env={"PYTHONPATH": str(site)}).start()
    try:
        repo = pipeline_repo("name: who\nstages:\n  s:\n    uses: whoami\n")
        run = daemon.wait(daemon.submit(repo.path).id)
    finally:
        daemon.stop()
    digest = hashlib.sha256(b"correct horse").hexdigest()[:12]
    assert stage(run, "s").reason == f"registry.example:5000 robot {digest} None"
    assert b"correct horse" not in (daemon_home / "daemon.log").read_bytes()
