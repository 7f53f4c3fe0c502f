"""Stages in containers on the real engine of this machine: the ``docker``
executor (a container per stage process) and the ``swarm`` executor (a
``replicated-job`` service per stage process, on the single-node swarm),
through a real daemon.

Every test checks that what the executors made for its run is gone when
the run ends; the fixtures remove anything a failed test leaves behind.
"""

from __future__ import annotations

import http.server
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.plugin import LABEL_RUN
from conveyor.v1 import runs_pb2
from tests.support import swarm as swarm_support
from tests.support.daemon import DaemonProcess, stage
from tests.support.docker import BASE_IMAGE, DockerSandbox, docker_required
from tests.support.executors import (
    build_image,
    daemon_id,
    remove_everything,
    run_containers,
    services,
    volumes,
    wait_for,
)
from tests.support.repos import GitRepo

pytestmark = pytest.mark.docker

#: The daemons' kill grace, seconds.
GRACE = 1.0


@pytest.fixture(scope="module")
def container_daemon(docker_engine: None) -> Iterator[DaemonProcess]:
    """One daemon for the module (kill grace 1 s); what the executors made
    for it is removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    proc = DaemonProcess(home, args=["--kill-grace", str(GRACE)]).start()
    try:
        yield proc
    finally:
        proc.stop()
        remove_everything(daemon_id(home))
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def swarm(docker_engine: None) -> None:
    reason = swarm_support.unavailable()
    if reason is None:
        return
    if docker_required():
        pytest.fail(f"CONVEYOR_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


def _wait_for_log(daemon: DaemonProcess, run_id: str, name: str, text: bytes) -> None:
    wait_for(f"{text!r} in the log of {name}", lambda: text in daemon.logs(run_id, name))


def _nothing_left(run_id: str) -> None:
    assert run_containers(run_id) == [], "every container of the run was removed"
    assert services(LABEL_RUN, run_id) == [], "every service of the run was removed"
    assert volumes(LABEL_RUN, run_id) == [], "every volume of the run (on this node) was removed"


# -- docker ------------------------------------------------------------------------


def test_stages_in_containers_pass_files_through_the_workspace(
    container_daemon: DaemonProcess,
    docker_sandbox: DockerSandbox,
    pipeline_repo: Callable[[str], GitRepo],
) -> None:
    image = build_image(
        docker_sandbox, "tools", "RUN mkdir -p /opt/tool && echo tool-1.2.3 > /opt/tool/version"
    )
    repo = pipeline_repo(
        f"""
name: in-containers
executor: docker
image: {image}
env: {{GREETING: hello}}
stages:
  make:
    run:
      - cat /opt/tool/version > made.txt
      - id -u > uid.txt
      - echo "workspace=$CONVEYOR_WORKSPACE pwd=$PWD path=$PATH" > where.txt
      - test -n "$TRACEPARENT" && echo "$GREETING from $CONVEYOR_STAGE" > env.txt
  use:
    needs: [make]
    run: cat made.txt uid.txt where.txt env.txt README.md
  on-the-host:
    needs: [use]
    executor: local
    run: cat made.txt
"""
    )
    repo.commit({"README.md": "checked out\n"})
    run = container_daemon.wait(container_daemon.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED, run.reason
    log = container_daemon.logs(run.id, "use").decode()
    assert "tool-1.2.3" in log, "the stage ran in the image, and the next stage saw its file"
    assert "\n65534\n" in log, "the container ran as nobody, not root"
    assert "workspace=/workspace pwd=/workspace path=/bin" in log, (
        "the workspace is mounted at /workspace; PATH is the image's, not the daemon's"
    )
    assert "hello from make" in log, "the stage's environment, with TRACEPARENT"
    assert "checked out" in log, "the checkout is in the workspace"
    assert b"tool-1.2.3" in container_daemon.logs(run.id, "on-the-host")
    _nothing_left(run.id)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"reached\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 of this machine."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_network_none_blocks_the_network_and_host_reaches_it(
    container_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], http_port: int
) -> None:
    # busybox's static wget crashes on name lookups; nc does not look anything up
    fetch = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 {http_port}"
    repo = pipeline_repo(
        f"""
name: networks
executor: docker
image: {BASE_IMAGE}
stages:
  isolated:
    run: "{fetch}"
  on-the-host:
    network: host
    run: "{fetch}"
"""
    )
    run = container_daemon.wait(container_daemon.submit(repo.path).id)
    isolated = stage(run, "isolated")
    assert isolated.status == runs_pb2.STAGE_STATUS_FAILED, (
        "network: none (the default) has no way out"
    )
    assert isolated.exit_code != 0
    assert stage(run, "on-the-host").status == runs_pb2.STAGE_STATUS_SUCCEEDED
    assert b"reached" in container_daemon.logs(run.id, "on-the-host")
    _nothing_left(run.id)


def test_a_stage_killed_for_memory_fails_saying_so(
    container_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(
        f"""
name: memory
stages:
  greedy:
    executor: docker
    image: {BASE_IMAGE}
    resources: {{memory: 16m}}
    run: tail /dev/zero
"""
    )
    run = container_daemon.wait(container_daemon.submit(repo.path).id)
    greedy = stage(run, "greedy")
    assert greedy.status == runs_pb2.STAGE_STATUS_FAILED
    assert greedy.reason == "killed: out of memory (limit 16m)"
    assert b"killed: out of memory (limit 16m)" in container_daemon.logs(run.id, "greedy")
    _nothing_left(run.id)


STUBBORN = """
name: stubborn-{executor}
stages:
  hang:
    executor: {executor}
    image: {image}
    run: |
      trap 'echo got TERM' TERM
      echo ready
      while true; do sleep 0.1; done
"""


def test_cancel_of_a_container_ignoring_sigterm_ends_after_the_grace_and_leaves_no_container(
    container_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(STUBBORN.format(executor="docker", image=BASE_IMAGE))
    run = container_daemon.submit(repo.path)
    _wait_for_log(container_daemon, run.id, "hang", b"ready")
    assert len(run_containers(run.id)) == 1
    started = time.monotonic()
    reply = container_daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id))
    took = time.monotonic() - started
    assert reply.run.status == runs_pb2.RUN_STATUS_CANCELLED
    assert stage(reply.run, "hang").status == runs_pb2.STAGE_STATUS_CANCELLED
    assert took >= GRACE * 0.9, "SIGKILL came after the grace period, not before"
    # grace + 1 s is the goal; the margin is for a loaded machine
    assert took < GRACE + 1 + 3, f"cancel took {took:.2f} s"
    lines = container_daemon.logs(run.id, "hang").splitlines()
    assert b"got TERM" in lines, "the process saw SIGTERM (its own line)"
    _nothing_left(run.id)


def test_a_container_stage_past_its_timeout_is_timed_out_not_a_success_and_leaves_no_container(
    container_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    pipeline = STUBBORN.format(executor="docker", image=BASE_IMAGE)
    repo = pipeline_repo(pipeline.replace("    run: |", "    timeout: 1s\n    run: |", 1))
    final = container_daemon.wait(container_daemon.submit(repo.path).id)
    assert final.status == runs_pb2.RUN_STATUS_TIMED_OUT
    hang = stage(final, "hang")
    assert hang.status == runs_pb2.STAGE_STATUS_TIMED_OUT
    assert "timed out after 1s" in hang.reason
    lines = container_daemon.logs(final.id, "hang").splitlines()
    assert b"got TERM" in lines, "the process saw SIGTERM before it was killed"
    _nothing_left(final.id)


def test_a_daemon_killed_during_a_container_stage_removes_the_container_at_restart(
    docker_engine: None, daemon_home: Path, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(STUBBORN.format(executor="docker", image=BASE_IMAGE))
    daemon = DaemonProcess(daemon_home, args=["--kill-grace", str(GRACE)]).start()
    try:
        run = daemon.submit(repo.path)
        _wait_for_log(daemon, run.id, "hang", b"ready")
        daemon.kill()
        assert len(run_containers(run.id)) == 1, "the container outlived the daemon"
        daemon.start()
        assert run_containers(run.id) == [], "start-up removed the interrupted run's container"
        final = daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id))
        assert final.status == runs_pb2.RUN_STATUS_INTERRUPTED
    finally:
        daemon.stop()
        remove_everything(daemon_id(daemon_home))


# -- swarm -------------------------------------------------------------------------


@pytest.mark.slow
def test_ten_parallel_swarm_stages_all_complete_with_their_logs(
    swarm: None, container_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    stages = "\n".join(
        f"""  part-{n}:
    run:
      - echo "part {n} of ten" > part-{n}.txt
      - echo "stage $CONVEYOR_STAGE says hello"
      - echo "and to stderr" >&2"""
        for n in range(10)
    )
    repo = pipeline_repo(
        f"""
name: fan-out
executor: swarm
image: {BASE_IMAGE}
stages:
{stages}
  gather:
    needs: [{", ".join(f"part-{n}" for n in range(10))}]
    run: cat part-*.txt
"""
    )
    run = container_daemon.wait(container_daemon.submit(repo.path).id, timeout=100)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED, run.reason
    for n in range(10):
        log = container_daemon.logs(run.id, f"part-{n}")
        assert log.count(f"stage part-{n} says hello\n".encode()) == 1, "all of it, once"
        assert log.count(b"and to stderr\n") == 1
    gathered = container_daemon.logs(run.id, "gather").decode()
    assert all(f"part {n} of ten" in gathered for n in range(10))
    _nothing_left(run.id)


@pytest.mark.slow
def test_cancel_of_a_swarm_stage_removes_its_service(
    swarm: None, container_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(STUBBORN.format(executor="swarm", image=BASE_IMAGE))
    run = container_daemon.submit(repo.path)
    _wait_for_log(container_daemon, run.id, "hang", b"ready")
    assert len(services(LABEL_RUN, run.id)) == 1
    reply = container_daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id))
    assert reply.run.status == runs_pb2.RUN_STATUS_CANCELLED
    assert stage(reply.run, "hang").status == runs_pb2.STAGE_STATUS_CANCELLED
    _nothing_left(run.id)
