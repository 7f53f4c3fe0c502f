"""A tiny HTTP service for the ``process`` target, the pipeline that
builds it as a ``file`` artifact, and a poller that counts failed requests.

The service (stdlib only) listens on 127.0.0.1:$PORT and answers
``/health`` and ``/version`` (its version, then the value of ``GREETING``
from its configuration). Its ``BROKEN`` constant makes a broken version:
``"always"`` fails its health check from the start, ``"after:2"`` fails it
2 seconds after it started (inside a watch window); ``/version`` keeps
answering either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.v1 import artifacts_pb2, delivery_pb2, runs_pb2
from tests.support.daemon import DaemonProcess
from tests.support.ports import free_port as free_port  # d.free_port() in the tests
from tests.support.repos import GitRepo

SERVICE = """\
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "@VERSION@"
BROKEN = "@BROKEN@"
STARTED = time.monotonic()


def healthy():
    if BROKEN == "always":
        return False
    if BROKEN.startswith("after:"):
        return time.monotonic() - STARTED < float(BROKEN.split(":", 1)[1])
    return True


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            ok = healthy()
            self.answer(200 if ok else 503, "ok" if ok else "broken")
        elif self.path == "/version":
            self.answer(200, json.dumps({
                "version": VERSION,
                "greeting": os.environ.get("GREETING", ""),
                "port": os.environ.get("PORT", ""),
                "deployment": os.environ.get("CONVEYOR_DEPLOYMENT", ""),
            }))
        else:
            self.answer(404, "not found")

    def answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
print("serving", VERSION, "on", os.environ["PORT"], flush=True)
server.serve_forever()
"""


def service_source(version: str = "1.0.0", broken: str = "") -> str:
    return SERVICE.replace("@VERSION@", version).replace("@BROKEN@", broken)


def pipeline(
    *,
    staging_port: int,
    production_port: int,
    replicas: int = 2,
    watch: str = "0.5s",
    production_approval: bool = False,
    deploy_stage: bool = False,
    extra: str = "",
    python: str = "python3",
    interval: float = 0.05,
) -> str:
    """A pipeline that builds the service as a file artifact, with staging
    and production environments on the process target (different
    configuration), and optionally a deploy stage to staging."""
    deploy = (
        """
  deploy:
    uses: deploy
    needs: [service]
    timeout: 60
    with: {environment: staging}
"""
        if deploy_stage
        else ""
    )
    return f"""\
name: shop
version: 1.0.0
stages:
  service:
    uses: file
    run: mkdir -p dist && cp service.py dist/service.py
    with: {{path: dist/service.py}}
{deploy}
environments:
  staging:
    run: [{python}, "{{artifact}}"]
    port: {staging_port}
    replicas: {replicas}
    config: {{GREETING: hello from staging}}
    health: {{path: /health, interval: {interval}, timeout: 1, failure_threshold: 2}}
    readiness_timeout: 10
    watch: {watch}
    stop_grace: 2
  production:
    run: [{python}, "{{artifact}}"]
    port: {production_port}
    replicas: {replicas}
    config: {{GREETING: hello from production}}
    env_file: deploy/production.env
    health: {{path: /health, interval: {interval}, timeout: 1, failure_threshold: 2}}
    readiness_timeout: 10
    watch: {watch}
    stop_grace: 2
    promote_from: staging
    requires_approval: {"true" if production_approval else "false"}
{extra}"""


def get(port: int, path: str = "/version", timeout: float = 2.0) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
        return answer.status, answer.read().decode()


def version_at(port: int) -> dict[str, str]:
    status, body = get(port)
    assert status == 200, body
    data: dict[str, str] = json.loads(body)
    return data


@dataclass
class Poller:
    """Sends requests to a port continuously from a thread; counts failures."""

    port: int
    path: str = "/version"
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = get(self.port, self.path)
            except (OSError, urllib.error.URLError) as exc:
                self.failed += 1
                self.errors.append(repr(exc))
            else:
                if status == 200:
                    self.ok += 1
                    self.versions.add(json.loads(body)["version"])
                else:
                    self.failed += 1
                    self.errors.append(f"HTTP {status}")
            time.sleep(0.005)


@contextmanager
def polling(port: int) -> Iterator[Poller]:
    """A :class:`Poller` running for the duration of the block."""
    poller = Poller(port)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        yield poller
    finally:
        poller._stop.set()
        thread.join(10)


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``check`` until it is true (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def stop_processes_of(home: Path) -> int:
    """SIGKILL the processes a test's daemon left running on purpose
    (replicas and front proxies outlive the daemon): those whose command
    line names that test's own home. Returns how many."""
    killed = 0
    marker = str(home)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline.replace("\0", " "):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
    return killed


FINAL = {
    delivery_pb2.DEPLOYMENT_STATUS_HEALTHY,
    delivery_pb2.DEPLOYMENT_STATUS_FAILED,
    delivery_pb2.DEPLOYMENT_STATUS_ROLLED_BACK,
    delivery_pb2.DEPLOYMENT_STATUS_REJECTED,
    delivery_pb2.DEPLOYMENT_STATUS_EXPIRED,
    delivery_pb2.DEPLOYMENT_STATUS_INTERRUPTED,
}


def finished(
    daemon: DaemonProcess, deployment_id: str, timeout: float = 60.0
) -> delivery_pb2.Deployment:
    """The deployment once it reached a final status (polled with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        deployment = daemon.stub.GetDeployment(
            delivery_pb2.GetDeploymentRequest(deployment_id=deployment_id), timeout=10
        )
        if deployment.status in FINAL:
            return deployment
        if time.monotonic() > deadline:
            raise AssertionError(f"deployment {deployment_id} still {deployment.status}")
        time.sleep(0.05)


def build(daemon: DaemonProcess, repo: GitRepo) -> str:
    """Run the repository's pipeline; the digest of the file artifact it built."""
    run = daemon.wait(daemon.submit(repo.path).id, timeout=120)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED, run.reason
    listed = daemon.stub.ListArtifacts(
        artifacts_pb2.ListArtifactsRequest(commit=run.commit), timeout=10
    )
    return str(listed.artifacts[0].digest)


def deploy(daemon: DaemonProcess, environment: str, artifact: str) -> delivery_pb2.Deployment:
    return daemon.stub.Deploy(
        delivery_pb2.DeployRequest(environment=environment, artifact=artifact), timeout=30
    )


def environment(daemon: DaemonProcess, name: str) -> delivery_pb2.Environment:
    return daemon.stub.GetEnvironment(
        delivery_pb2.GetEnvironmentRequest(environment=name), timeout=30
    )
