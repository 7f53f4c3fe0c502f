"""A tiny HTTP service for the deploy-target tests and benchmarks, and a
poller that counts the requests it loses.

The service is busybox ``httpd`` from the base image, serving ``/www`` on
``127.0.0.1:$PORT`` (the deploy targets set ``PORT``): ``/health`` answers
``ok`` and ``/version`` the version baked into the image at build time.
Broken versions: ``health="missing"`` has no health file (404 from the
start); ``health="late"`` removes it two seconds after start (healthy at
first, failing inside a watch window); ``health="crash"`` exits at once
with code 3 after writing ``<version> cannot start`` to stderr.
"""

from __future__ import annotations

import http.client
import io
import tarfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import docker

from tests.support.docker import DockerSandbox

Health = Literal["ok", "missing", "late", "crash"]

#: Seconds after start at which a ``health="late"`` image's health fails.
LATE_FAILURE_AFTER = 2


def service_dockerfile(sandbox: DockerSandbox, version: str, health: Health = "ok") -> str:
    """The Dockerfile of one version of the service."""
    files = f"mkdir -p /www && echo {version} > /www/version"
    if health != "missing":
        files += " && echo ok > /www/health"
    serve = 'exec httpd -f -p "127.0.0.1:${PORT:?PORT is not set}" -h /www'
    if health == "late":
        serve = f"(sleep {LATE_FAILURE_AFTER}; rm -f /www/health) & {serve}"
    if health == "crash":
        serve = f"echo {version} cannot start >&2; exit 3"
    return sandbox.dockerfile(f"RUN {files}", f'CMD ["sh", "-c", {_json_string(serve)}]')


def _json_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_service_image(
    sandbox: DockerSandbox, version: str, health: Health = "ok", name: str = "app"
) -> str:
    """Build one version of the service, tagged ``<sandbox repo>:<version>``;
    returns its image id (``sha256:...``). The sandbox removes it."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = service_dockerfile(sandbox, version, health).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    api = docker.APIClient()
    try:
        tag = f"{sandbox.image(name)}:{version}"
        for chunk in api.build(
            fileobj=context, custom_context=True, tag=tag, rm=True, decode=True, pull=False
        ):
            if "errorDetail" in chunk:
                raise RuntimeError(f"building {tag} failed: {chunk['errorDetail']}")
        image_id: str = api.inspect_image(tag)["Id"]  # type: ignore[no-untyped-call]
        return image_id
    finally:
        api.close()


def get(port: int, path: str, timeout: float = 1.0) -> tuple[int, str]:
    """GET ``http://127.0.0.1:<port><path>``: (status, body). Raises OSError
    (refused, reset, timed out) when no answer comes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace").strip()
    finally:
        conn.close()


def wait_version(port: int, version: str, timeout: float = 30) -> None:
    """Wait until ``/version`` on ``port`` answers ``version``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = get(port, "/version")
            if status == 200 and body == version:
                return
            last = (status, body)
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"port {port} never answered version {version!r} (last: {last!r})")


@dataclass
class Poller:
    """Sends ``GET /version`` to a port back to back in a thread, counting
    the answers by version, the failed requests (no answer, or not 200) and
    the longest stretch without a good answer (the outage)."""

    port: int
    interval: float = 0.01
    versions: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    requests: int = 0
    longest_outage: float = 0.0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Poller:
        self._thread = threading.Thread(target=self._run, name=f"poller-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Poller:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        return self

    def __enter__(self) -> Poller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        down_since: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            ok = False
            try:
                status, body = get(self.port, "/version")
                ok = status == 200
                if ok:
                    self.versions[body] += 1
                else:
                    self._error(f"HTTP {status}")
            except OSError as exc:
                self._error(f"{type(exc).__name__}: {exc}")
            self.requests += 1
            if ok:
                if down_since is not None:
                    self.longest_outage = max(self.longest_outage, now - down_since)
                down_since = None
            else:
                self.failed += 1
                if down_since is None:
                    down_since = now
            self._stop.wait(self.interval)
        if down_since is not None:
            self.longest_outage = max(self.longest_outage, time.monotonic() - down_since)

    def _error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)

    def summary(self) -> str:
        return (
            f"{self.requests} requests, {self.failed} failed, versions {dict(self.versions)},"
            f" longest outage {self.longest_outage:.3f} s, first errors {self.errors[:5]}"
        )
