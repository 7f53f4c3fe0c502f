"""Deployments on the ``docker`` and ``swarm`` targets through a real daemon,
against the same rolls done by hand with the docker CLI in the same run.

The service is busybox ``httpd`` (tests/support/httpd.py), built by the
pipeline's ``build`` stage in two versions, so every deployment moves a
digest the daemon recorded. Two replicas everywhere; health checks every
20 ms (the by-hand rolls poll as often); no watch window, so "healthy"
means what the by-hand roll does: every new replica answers its health
check and every old one is stopped.

``docker``, per round (sides alternate which goes first):

* **promote**: staging is deployed the other version (not timed), then
  ``Promote`` staging → production is timed from the call to the
  deployment's ``healthy`` time stamp (the daemon's clock is this
  machine's), while a poller on production's front port counts failed
  requests (it runs through the by-hand side too, so both roll under the
  same load: each request forks an ``httpd``);
* **by hand**: two containers of one version replaced by two of the other
  with the docker CLI, one at a time: ``docker run -d --init --network
  host`` on a new port, ``/health`` polled until 200, ``docker stop`` of
  the old one (315 ms measured here when the machine was quiet).

Target: median Conveyor / by-hand ≤ 1.2, 0 failed requests.

**Automatic rollback**: a version whose health check fails is deployed to
an environment serving a good one; timed from the ``Deploy`` call to
``rolled_back`` (target ≤ 2 s: the new replica started, failed its
health check and stopped, the previous version healthy again), and from
the failure (the deployment's log says it) to the restore deployment's
``healthy``.

``swarm``: the same figures on a single-node swarm (a Swarm service rolled
by Swarm, stop-first), against ``docker service update --image``
(``--no-resolve-image``, the same update settings) by hand, with the failed
requests and the longest outage on the front port. Swarm's own rollback
took 13 to 30 s here.

Needs the engine, the registry, the base image and the swarm
(``scripts/services.sh start``).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import BenchResult, Figure, ms, running_daemon, scratch_dir
from conveyor.v1 import delivery_pb2
from tests.support import swarm as swarm_support
from tests.support.daemon import DaemonProcess
from tests.support.docker import DockerSandbox
from tests.support.httpd import Health, Poller, get, service_dockerfile, wait_version
from tests.support.ports import free_port
from tests.support.repos import GitRepo, make_repo
from tests.support.targets import (
    FINAL,
    built_image,
    deploy,
    finished,
    free_slot_base,
    get_deployment,
    owner_of,
    remove_containers,
    stop_processes_of,
)

NAME = "deploy_targets"
RATIO_TARGET = 1.2
ROLLBACK_TARGET_S = 2.0
#: Seconds between health checks, for the daemon and the by-hand rolls.
INTERVAL = 0.02
S = delivery_pb2


def _environment(target: str, port: int, greeting: str, promote_from: str = "") -> str:
    text = (
        f"    target: {target}\n"
        f"    port: {port}\n"
        "    replicas: 2\n"
        f"    config: {{GREETING: {greeting}}}\n"
        f"    health: {{path: /health, interval: {INTERVAL}, timeout: 1, failure_threshold: 2}}\n"
        "    readiness_timeout: 30\n"
        "    watch: 0s\n"
        "    stop_grace: 2\n"
    )
    return text + (f"    promote_from: {promote_from}\n" if promote_from else "")


@dataclass
class Ports:
    staging: int
    production: int
    swarm_staging: int
    swarm_production: int


def _pipeline(image: str, ports: Ports) -> str:
    return (
        "name: shop\nversion: 1.0.0\nstages:\n  image:\n    uses: build\n"
        f"    with: {{image: {image}}}\n"
        "environments:\n"
        "  staging:\n"
        + _environment("docker", ports.staging, "staging")
        + "  production:\n"
        + _environment("docker", ports.production, "production", "staging")
        + "  swarm-staging:\n"
        + _environment("swarm", ports.swarm_staging, "staging")
        + "  swarm-production:\n"
        + _environment("swarm", ports.swarm_production, "production", "swarm-staging")
    )


def _release(
    daemon: DaemonProcess,
    repo: GitRepo,
    sandbox: DockerSandbox,
    ports: Ports,
    version: str,
    health: Health = "ok",
) -> str:
    repo.commit(
        {
            "Dockerfile": service_dockerfile(sandbox, version, health),
            "conveyor.yaml": _pipeline(sandbox.image(), ports),
        },
        f"release {version}",
    )
    return built_image(daemon, repo.path)


def _healthy(daemon: DaemonProcess, deployment_id: str) -> delivery_pb2.Deployment:
    final = finished(daemon, deployment_id, timeout=300)
    if final.status != S.DEPLOYMENT_STATUS_HEALTHY:
        raise RuntimeError(f"deployment {deployment_id} ended {final.status}: {final.reason}")
    return final


def _wait_final(daemon: DaemonProcess, deployment_id: str) -> delivery_pb2.Deployment:
    """The deployment once final (polled every 50 ms: times come from the
    daemon's own time stamps, so the poll adds no error and little load)."""
    deadline = time.monotonic() + 300
    while True:
        found = get_deployment(daemon, deployment_id)
        if found.status in FINAL:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"deployment {deployment_id} still {found.status}")
        time.sleep(0.05)


def _promote(daemon: DaemonProcess, source: str, environment: str) -> dict[str, float]:
    """Promote ``source`` → ``environment``: seconds from the call to the
    deployment's ``healthy`` (the daemon's time stamp, same clock)."""
    t0 = time.time()
    promoted = daemon.stub.Promote(
        S.PromoteRequest(from_environment=source, environment=environment), timeout=30
    )
    final = _wait_final(daemon, promoted.id)
    if final.status != S.DEPLOYMENT_STATUS_HEALTHY:
        raise RuntimeError(f"promotion {promoted.id} ended {final.status}: {final.reason}")
    return {"wall": _seconds(final.healthy_at) - t0}


def _polled(poller: Poller) -> dict[str, float]:
    return {
        "failed": float(poller.failed),
        "requests": float(poller.requests),
        "outage": poller.longest_outage,
    }


def _rollback(daemon: DaemonProcess, environment: str, digest: str, port: int) -> dict[str, float]:
    """Deploy a version whose health fails; time its automatic rollback."""
    with Poller(port, interval=0.005) as poller:
        t0 = time.time()
        attempt = deploy(daemon, environment, digest)
        broken = _wait_final(daemon, attempt.id)
    if broken.status != S.DEPLOYMENT_STATUS_ROLLED_BACK:
        raise RuntimeError(f"deployment {attempt.id} ended {broken.status}: {broken.reason}")
    restore = get_deployment(daemon, broken.restored_by)
    failed_at = next(
        (_seconds(e.time) for e in broken.events if "the rollout failed" in e.message), None
    )
    if failed_at is None or not restore.HasField("healthy_at"):
        raise RuntimeError(f"no failure or restore time in deployment {attempt.id}")
    return {
        "total": _seconds(broken.finished_at) - t0,
        "after_failure": _seconds(restore.healthy_at) - failed_at,
        **_polled(poller),
    }


def _seconds(stamp: Any) -> float:
    return float(stamp.seconds) + float(stamp.nanos) / 1e9


# -- by hand with the docker CLI -----------------------------------------------------------


def _cli(*argv: str) -> str:
    return subprocess.run(
        ["docker", *argv], capture_output=True, text=True, check=True
    ).stdout.strip()


def _poll_health(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(port, "/health")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} never became healthy")
        time.sleep(INTERVAL)


@dataclass
class HandFleet:
    """Containers started by hand with the docker CLI."""

    label: str
    containers: list[str]

    def run(self, image: str, port: int) -> str:
        return _cli(
            "run",
            "-d",
            "--init",
            "--network",
            "host",
            "-e",
            f"PORT={port}",
            "-e",
            "GREETING=by hand",
            "--label",
            self.label,
            image,
        )

    def start(self, image: str, replicas: int = 2) -> None:
        for _ in range(replicas):
            port = free_port()
            self.containers.append(self.run(image, port))
            _poll_health(port)

    def roll(self, image: str) -> float:
        """Replace every container by one of ``image``, one at a time; seconds."""
        old, new = self.containers, []
        t0 = time.perf_counter()
        for container in old:
            port = free_port()
            new.append(self.run(image, port))
            _poll_health(port)
            _cli("stop", container)
        elapsed = time.perf_counter() - t0
        _cli("rm", *old)
        self.containers = new
        return elapsed

    def remove(self) -> None:
        found = _cli("ps", "-aq", "--filter", f"label={self.label}").split()
        if found:
            _cli("rm", "-f", *found)


@dataclass
class HandService:
    """A Swarm service made and updated by hand with the docker CLI."""

    name: str
    label: str

    def create(self, image: str, base: int) -> None:
        _cli(
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            self.name,
            "--label",
            self.label,
            "--network",
            "host",
            "--replicas",
            "2",
            "--init",
            "--env",
            f"PORT={base}{{{{.Task.Slot}}}}",
            "--env",
            "GREETING=by hand",
            "--update-parallelism",
            "1",
            "--update-order",
            "stop-first",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "1s",
            "--rollback-order",
            "stop-first",
            "--rollback-monitor",
            "1s",
            "--stop-grace-period",
            "2s",
            image,
        )

    def update(self, image: str, ports: list[int]) -> float:
        """``docker service update --image`` until it converged and every
        replica answers its health check; seconds."""
        t0 = time.perf_counter()
        _cli(
            "service",
            "update",
            "--detach=false",
            "--quiet",
            "--no-resolve-image",
            "--image",
            image,
            self.name,
        )
        for port in ports:
            _poll_health(port)
        return time.perf_counter() - t0

    def remove(self) -> None:
        subprocess.run(["docker", "service", "rm", self.name], capture_output=True, check=False)


# -- the benchmark -------------------------------------------------------------------------


def _median_ms(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows) * 1000


def _column(rows: list[dict[str, float]], key: str) -> list[float]:
    return [row[key] for row in rows]


def _alternate(round_: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    if round_ % 2 == 0:
        first()
        second()
    else:
        second()
        first()


def run(quick: bool) -> BenchResult:
    reason = swarm_support.unavailable()
    if reason is not None:
        raise RuntimeError(f"needs the Docker engine, the registry and the swarm: {reason}")
    docker_rounds = 3 if quick else 10
    swarm_rounds = 1 if quick else 3
    sandbox = DockerSandbox()
    home = Path(tempfile.mkdtemp(prefix="cvb-", dir="/tmp"))
    hand = HandFleet(sandbox.label, [])
    hand_service = HandService(f"conveyor-bench-{sandbox.token}", sandbox.label)
    ports = Ports(free_port(), free_port(), free_port(), free_port())
    docker: list[dict[str, float]] = []
    by_hand: list[dict[str, float]] = []
    swarm: list[dict[str, float]] = []
    swarm_by_hand: list[dict[str, float]] = []
    rollbacks: list[dict[str, float]] = []
    swarm_rollbacks: list[dict[str, float]] = []
    try:
        with scratch_dir() as root, running_daemon(home, "--kill-grace", "1") as daemon:
            repo = make_repo(root / "shop", {"README": "a shop\n"})
            versions = [_release(daemon, repo, sandbox, ports, v) for v in ("1.0.0", "2.0.0")]
            broken = _release(daemon, repo, sandbox, ports, "3.0.0", "missing")

            # docker: production and the by-hand fleet start on version 1
            _healthy(daemon, deploy(daemon, "staging", versions[0]).id)
            _promote(daemon, "staging", "production")
            hand.start(versions[0])

            def docker_round(round_: int) -> None:
                version = versions[(round_ + 1) % 2]
                _healthy(daemon, deploy(daemon, "staging", version).id)
                promoted: dict[str, float] = {}

                def conveyor_side() -> None:
                    promoted.update(_promote(daemon, "staging", "production"))

                def hand_side() -> None:
                    by_hand.append({"wall": hand.roll(version)})

                # the poller runs through both sides, so both roll under its load
                with Poller(ports.production, interval=0.005) as poller:
                    _alternate(round_, conveyor_side, hand_side)
                docker.append({**promoted, **_polled(poller)})

            docker_round(-1)  # warm-up, not counted
            docker.clear()
            by_hand.clear()
            for round_ in range(docker_rounds):
                docker_round(round_)
            for _ in range(docker_rounds):
                rollbacks.append(_rollback(daemon, "staging", broken, ports.staging))
            wait_version(ports.staging, "1.0.0" if docker_rounds % 2 == 0 else "2.0.0")

            # swarm: the same, with a service made by hand beside
            _healthy(daemon, deploy(daemon, "swarm-staging", versions[0]).id)
            _promote(daemon, "swarm-staging", "swarm-production")
            base = free_slot_base(2)
            hand_service.create(versions[0], base)
            hand_ports = [base * 10 + 1, base * 10 + 2]
            for port in hand_ports:
                _poll_health(port, timeout=60)

            def swarm_round(round_: int) -> None:
                version = versions[(round_ + 1) % 2]
                _healthy(daemon, deploy(daemon, "swarm-staging", version).id)
                promoted: dict[str, float] = {}

                def swarm_side() -> None:
                    promoted.update(_promote(daemon, "swarm-staging", "swarm-production"))

                def hand_side() -> None:
                    swarm_by_hand.append({"wall": hand_service.update(version, hand_ports)})

                with Poller(ports.swarm_production, interval=0.005) as poller:
                    _alternate(round_, swarm_side, hand_side)
                swarm.append({**promoted, **_polled(poller)})

            for round_ in range(swarm_rounds):
                swarm_round(round_)
            for _ in range(swarm_rounds):
                swarm_rollbacks.append(
                    _rollback(daemon, "swarm-staging", broken, ports.swarm_staging)
                )
    finally:
        hand.remove()
        hand_service.remove()
        stop_processes_of(home)
        remove_containers(owner_of(home))
        swarm_support.remove_services(owner_of(home))
        shutil.rmtree(home, ignore_errors=True)
        sandbox.cleanup()

    ratios = [c["wall"] / h["wall"] for c, h in zip(docker, by_hand, strict=True)]
    promote_ms = _median_ms(docker, "wall")
    hand_ms = _median_ms(by_hand, "wall")
    failed = sum(_column(docker, "failed"))
    swarm_promote_ms = _median_ms(swarm, "wall")
    swarm_hand_ms = _median_ms(swarm_by_hand, "wall")
    figures = [
        Figure(
            "docker: promote of 2 replicas -> all healthy",
            promote_ms,
            "ms",
            baseline=hand_ms,
            baseline_name="the same roll by hand, docker CLI",
            note="Promote call to the deployment's healthy status, median",
        ),
        Figure(
            "docker: promote / roll by hand (median of the rounds' ratios)",
            statistics.median(ratios),
            "x",
            RATIO_TARGET,
        ),
        Figure("docker: promote / roll by hand (ratio of the medians)", promote_ms / hand_ms, "x"),
        Figure("baseline: the roll by hand with the docker CLI", hand_ms, "ms"),
        Figure("docker: failed requests during the promotions", failed, "requests", 0.0),
        Figure(
            "docker: failed health -> automatic rollback finished",
            _median_ms(rollbacks, "total") / 1000,
            "s",
            ROLLBACK_TARGET_S,
            note="Deploy call of a version whose health fails to rolled_back (the new replica"
            " started, failed its check, stopped; the previous version healthy), median",
        ),
        Figure(
            "docker: rollout failed (logged) -> previous version healthy again",
            _median_ms(rollbacks, "after_failure") / 1000,
            "s",
        ),
        Figure(
            "docker: failed requests during the rollbacks",
            sum(_column(rollbacks, "failed")),
            "requests",
            0.0,
        ),
        Figure(
            "swarm: promote of 2 replicas -> all healthy",
            swarm_promote_ms,
            "ms",
            baseline=swarm_hand_ms,
            baseline_name="docker service update by hand",
            note="Swarm's stop-first update, median",
        ),
        Figure(
            "swarm: failed requests during the promotions",
            sum(_column(swarm, "failed")),
            "requests",
            headline=True,
        ),
        Figure(
            "swarm: longest outage on the front port during a promotion",
            max(_column(swarm, "outage")) * 1000,
            "ms",
            headline=True,
        ),
        Figure(
            "swarm: failed health -> automatic rollback finished",
            _median_ms(swarm_rollbacks, "after_failure") / 1000,
            "s",
            baseline=13.0,
            baseline_name="Swarm's own rollback, 13-30 s measured here",
            note="rollout failed (logged, after Swarm rolled the broken version out) to the"
            " previous version healthy again (Swarm rolls it back in), median",
        ),
        Figure(
            "swarm: deploy of a broken version -> rolled back",
            _median_ms(swarm_rollbacks, "total") / 1000,
            "s",
            headline=True,
            note="Deploy call to rolled_back: two stop-first Swarm updates",
        ),
        Figure(
            "swarm: failed requests during the rollbacks",
            sum(_column(swarm_rollbacks, "failed")),
            "requests",
            headline=True,
        ),
        Figure(
            "swarm: longest outage on the front port during a rollback",
            max(_column(swarm_rollbacks, "outage")) * 1000,
            "ms",
            headline=True,
        ),
    ]

    def samples(rows: list[dict[str, float]]) -> dict[str, list[float]]:
        return {
            key: ms(_column(rows, key))
            if key in ("wall", "total", "after_failure", "outage")
            else _column(rows, key)
            for key in rows[0]
        }

    return BenchResult(
        name=NAME,
        figures=figures,
        parameters={
            "docker_rounds": docker_rounds,
            "swarm_rounds": swarm_rounds,
            "replicas": 2,
            "health_interval_s": INTERVAL,
            "watch_window_s": 0,
            "by_hand": "docker run -d --init --network host -e PORT=<new port>; GET /health"
            f" every {INTERVAL * 1000:.0f} ms until 200; docker stop <old>; per replica",
            "swarm_by_hand": "docker service update --detach=false --no-resolve-image --image"
            " (stop-first, parallelism 1, monitor 1s), then GET /health on each replica",
        },
        samples={
            "units": "ms for times, counts for requests",
            "docker_promote": samples(docker),
            "docker_by_hand": samples(by_hand),
            "docker_rollback": samples(rollbacks),
            "swarm_promote": samples(swarm),
            "swarm_by_hand": samples(swarm_by_hand),
            "swarm_rollback": samples(swarm_rollbacks),
            "ratios": [round(r, 4) for r in ratios],
        },
        summary={
            "docker_ratio_median": statistics.median(ratios),
            "docker_ratio_target": RATIO_TARGET,
            "docker_failed_requests": failed,
            "docker_rollback_s": _median_ms(rollbacks, "after_failure") / 1000,
            "swarm_failed_requests": sum(_column(swarm, "failed")),
            "swarm_rollback_s": _median_ms(swarm_rollbacks, "after_failure") / 1000,
        },
    )
