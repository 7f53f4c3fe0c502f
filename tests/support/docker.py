"""The Docker engine and the registries of this machine, for tests marked
``docker``.

``scripts/services.sh start`` starts the engine, the registry on
127.0.0.1:5000 and makes the base image :data:`BASE_IMAGE` (nothing can be
pulled here). :func:`unavailable` says why Docker tests cannot run; the
``docker_engine`` fixture skips them with that reason, or fails them when
``CONVEYOR_REQUIRE_DOCKER=1`` (as CI sets it).

Each test names its images under its own repository
(``127.0.0.1:5000/conveyor-test/<token>/...``) and labels every layer it
builds (``dev.conveyor.test=<token>``, right after ``FROM``: see
:meth:`DockerSandbox.dockerfile`), which is how everything it made is found
and removed afterwards: images (the builder's cached intermediate layers
too), the builder's containers, and the manifests it pushed. (A registry
keeps an emptied repository's name in its catalog until it is
garbage-collected.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException, NotFound

from conveyor.plugin import Artifact, ArtifactOutput, StageContext
from tests.support import processes
from tests.support.ports import free_port

REGISTRY = "127.0.0.1:5000"
BASE_IMAGE = f"{REGISTRY}/conveyor/busybox:1"
REQUIRE_ENV = "CONVEYOR_REQUIRE_DOCKER"
#: Where tests put their images in a registry.
TEST_NAMESPACE = "conveyor-test"
#: The label on every layer a test builds (and so on the builder's containers).
TEST_LABEL = "dev.conveyor.test"
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def docker_required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def unavailable() -> str | None:
    """Why Docker tests cannot run on this machine, in one line; None when
    the engine, the registry and the base image are all there."""
    try:
        api = docker.APIClient(timeout=5)
    except DockerException as exc:
        return f"no Docker engine ({exc}); start one with scripts/services.sh start"
    try:
        api.inspect_image(BASE_IMAGE)  # type: ignore[no-untyped-call]
    except NotFound:
        return f"no base image {BASE_IMAGE}; make it with scripts/services.sh start"
    except DockerException as exc:
        return f"the Docker engine does not answer ({exc})"
    finally:
        api.close()
    try:
        with _NO_PROXY.open(f"http://{REGISTRY}/v2/", timeout=5):
            pass
    except (urllib.error.URLError, OSError) as exc:
        return f"no registry on {REGISTRY} ({exc}); start it with scripts/services.sh start"
    return None


# -- a registry's HTTP API ------------------------------------------------------------


def _request(
    url: str, *, method: str = "GET", login: tuple[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Accept": MANIFEST_ACCEPT}
    if login is not None:
        pair = f"{login[0]}:{login[1]}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with _NO_PROXY.open(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers.items()), exc.read()


def registry_tags(registry: str, path: str, login: tuple[str, str] | None = None) -> dict[str, str]:
    """Each tag of ``path`` in ``registry`` with the image id (config digest)
    it names; {} for an unknown repository."""
    status, _, body = _request(f"http://{registry}/v2/{path}/tags/list", login=login)
    if status == 404:
        return {}
    assert status == 200, (status, body)
    tags: dict[str, str] = {}
    for tag in json.loads(body).get("tags") or []:
        found = registry_manifest(registry, path, tag, login)
        if found is not None:
            tags[tag] = found[1]
    return tags


def registry_manifest(
    registry: str, path: str, tag: str, login: tuple[str, str] | None = None
) -> tuple[str, str] | None:
    """(manifest digest, config digest) of ``path:tag``, or None."""
    status, headers, body = _request(f"http://{registry}/v2/{path}/manifests/{tag}", login=login)
    if status == 404:
        return None
    assert status == 200, (status, body)
    return headers["Docker-Content-Digest"], json.loads(body)["config"]["digest"]


def delete_repository(registry: str, path: str, login: tuple[str, str] | None = None) -> None:
    """Delete every manifest of ``path`` (the registry allows deletes)."""
    status, _, body = _request(f"http://{registry}/v2/{path}/tags/list", login=login)
    if status != 200:
        return
    for tag in json.loads(body).get("tags") or []:
        found = registry_manifest(registry, path, tag, login)
        if found is not None:
            url = f"http://{registry}/v2/{path}/manifests/{found[0]}"
            _request(url, method="DELETE", login=login)


# -- a test's images -------------------------------------------------------------------


@dataclass
class DockerSandbox:
    """Image names for one test, and the clean-up of what it made."""

    token: str = field(default_factory=lambda: secrets.token_hex(6))
    #: Registries (and logins) the test pushed to, for the clean-up.
    registries: dict[str, tuple[str, str] | None] = field(default_factory=lambda: {REGISTRY: None})

    def image(self, name: str = "app", registry: str = REGISTRY) -> str:
        """A repository of this test: ``127.0.0.1:5000/conveyor-test/<token>/app``."""
        return f"{registry}/{TEST_NAMESPACE}/{self.token}/{name}"

    def path(self, name: str = "app") -> str:
        """The repository's path in its registry."""
        return f"{TEST_NAMESPACE}/{self.token}/{name}"

    @property
    def marker(self) -> str:
        """A word to put in the test's commands, to find its processes."""
        return f"conveyor-test-{self.token}"

    @property
    def label(self) -> str:
        return f"{TEST_LABEL}={self.token}"

    def dockerfile(self, *steps: str, stage: str = "") -> str:
        """A Dockerfile from the base image whose every layer carries the test's label."""
        start = f"FROM {BASE_IMAGE}" + (f" AS {stage}" if stage else "")
        return "\n".join([start, f"LABEL {self.label}", *steps]) + "\n"

    def containers(self) -> list[str]:
        """The test's containers, in any state: made from its layers, or
        running one of its commands."""
        api = docker.APIClient()
        try:
            return sorted(
                c["Id"]
                for c in api.containers(all=True)
                if self.marker in (c.get("Command") or "")
                or (c.get("Labels") or {}).get(TEST_LABEL) == self.token
            )
        finally:
            api.close()

    def images(self) -> list[str]:
        """Ids of the test's images, newest first: its labelled layers and
        what is tagged in (or was pushed to) its repositories."""
        api = docker.APIClient()
        try:
            found: dict[str, int] = {}
            for image in api.images(filters={"label": self.label}, all=True):
                found[image["Id"]] = image["Created"]
            for image in api.images():
                # An image whose tags all moved is still known by its digests.
                names = (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
                if any(f"/{TEST_NAMESPACE}/{self.token}/" in name for name in names):
                    found[image["Id"]] = image["Created"]
            return sorted(found, key=lambda i: found[i], reverse=True)
        finally:
            api.close()

    def tags(self) -> list[str]:
        """``repository:tag`` of the images tagged in the test's repositories."""
        api = docker.APIClient()
        try:
            return sorted(
                tag
                for image in api.images()
                for tag in image.get("RepoTags") or []
                if f"/{TEST_NAMESPACE}/{self.token}/" in tag
            )
        finally:
            api.close()

    def cleanup(self) -> None:
        api = docker.APIClient()
        try:
            for container in self.containers():
                with contextlib.suppress(DockerException):
                    api.remove_container(container, force=True)
            for _ in range(3):  # a layer goes once the layers built on it are gone
                for image in self.images():
                    with contextlib.suppress(DockerException):
                        api.remove_image(image, force=True)
        finally:
            api.close()
        for registry, login in self.registries.items():
            status, _, body = _request(f"http://{registry}/v2/_catalog?n=10000", login=login)
            if status != 200:
                continue
            for path in json.loads(body).get("repositories") or []:
                if path.startswith(f"{TEST_NAMESPACE}/{self.token}/"):
                    delete_repository(registry, path, login)


def write_context(root: Path, files: dict[str, str]) -> Path:
    """Write a build context (a Dockerfile and its files) into ``root``."""
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return root


def recorded(ctx: StageContext, output: ArtifactOutput, version: str = "") -> Artifact:
    """The artifact the daemon would record for a build stage's output."""
    return Artifact(
        digest=output.digest,
        kind=output.kind,
        name=output.name,
        version=version,
        tags=output.tags,
        size=output.size,
        media_type=output.media_type,
        repository=ctx.run.repository,
        ref=ctx.run.ref,
        commit=ctx.run.commit,
        pipeline=ctx.run.pipeline,
        run_id=ctx.run.id,
        run_number=ctx.run.number,
        stage=ctx.name,
        stages=(),
        created_at=time.time(),
        trace_id="",
        span_id="",
        pushed_to=(),
        manifest_digest="",
        reproducible=True,
        changed_files=(),
        provenance="",
        key_id="",
        attributes=dict(output.attributes),
    )


# -- a registry that wants a login -----------------------------------------------------


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for an htpasswd file (the registry takes only bcrypt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # Python 3.11: glibc's crypt(3) does bcrypt

    # The lowest cost: the registry checks the hash on every request.
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


@dataclass
class AuthRegistry:
    """Debian's ``docker-registry`` on a loopback port, with htpasswd logins."""

    username: str = "conveyor"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cv-registry-")))
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def login(self) -> tuple[str, str]:
        return self.username, self.password

    def start(self, timeout: float = 20) -> AuthRegistry:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed (scripts/services.sh install)")
        self.port = free_port()
        htpasswd = self.folder / "htpasswd"
        htpasswd.write_text(f"{self.username}:{bcrypt_hash(self.password)}\n")
        config = self.folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.folder / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n"
            "auth:\n  htpasswd:\n    realm: conveyor-test\n"
            f"    path: {htpasswd}\n"
        )
        log = (self.folder / "registry.log").open("wb")
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _, _ = _request(f"http://{self.address}/v2/")
                if status == 401:
                    return self
            except (urllib.error.URLError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"docker-registry did not start:\n{(self.folder / 'registry.log').read_text()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc)
            self.proc = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def docker_config(self, folder: Path) -> Path:
        """A Docker config folder (``$DOCKER_CONFIG``) logged in to this registry."""
        folder.mkdir(parents=True, exist_ok=True)
        auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        (folder / "config.json").write_text(json.dumps({"auths": {self.address: {"auth": auth}}}))
        return folder


def daemon_records_artifacts() -> bool:
    """Whether this daemon records stage artifacts (and so hands a push stage
    the images earlier stages built): the artifact API is in its proto."""
    proto = Path(__file__).resolve().parents[2] / "proto" / "conveyor" / "v1" / "service.proto"
    return "rpc ListArtifacts" in proto.read_text()


def image_labels(image: str) -> dict[str, Any]:
    api = docker.APIClient()
    try:
        details: dict[str, Any] = api.inspect_image(image)  # type: ignore[no-untyped-call]
        return dict(details["Config"].get("Labels") or {})
    finally:
        api.close()
