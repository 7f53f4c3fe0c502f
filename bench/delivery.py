"""Delivery on the ``process`` target: an automatic rollback, and a promotion.

* **Failed health -> automatic rollback.** An environment of 2 replicas
  runs a good version; a version whose health check fails (HTTP 503) is
  deployed. The figure is the deployment's time from its creation to its
  final status, ``rolled_back`` with the previous version serving again, as
  the daemon recorded it (target: at most 2 s); a poller sends requests to
  the front port throughout and counts failed ones (target: 0).
* **Promotion of 2 replicas.** The digest healthy in staging is promoted to
  production, which runs another version on 2 replicas: from the Promote
  call to the deployment healthy (no watch window), against the same roll
  done by hand in this process (start the new service on a new port, poll
  its health check, stop an old one; twice), with the failed-request count
  of a poller on production's front port.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import BenchResult, Figure, describe, running_daemon, scratch_dir, seconds
from conveyor.v1 import delivery_pb2
from tests.support import delivery as d
from tests.support.repos import make_repo

NAME = "delivery"
#: Failed health to the rollback finished, at most this, in seconds.
TARGET_ROLLBACK_S = 2.0
#: Failed requests during a rollback or a promotion.
TARGET_FAILED_REQUESTS = 0


def _pipeline(staging: int, production: int) -> str:
    # the same interpreter as the roll by hand (not a version manager's shim)
    return d.pipeline(
        staging_port=staging,
        production_port=production,
        watch="0",
        python=sys.executable,
        interval=0.01,  # as often as the roll by hand looks
    )


def _release(repo: Any, daemon: Any, version: str, broken: str = "") -> str:
    repo.commit({"service.py": d.service_source(version, broken)}, f"release {version}")
    return d.build(daemon, repo)


def _deployed(daemon: Any, deployment: delivery_pb2.Deployment) -> delivery_pb2.Deployment:
    final = d.finished(daemon, deployment.id)
    return final


def _elapsed(deployment: delivery_pb2.Deployment) -> float:
    return seconds(deployment.finished_at) - seconds(deployment.created_at)


def _by_hand(root: Path, rounds: int) -> list[float]:
    """The same roll of 2 replicas by hand: start new, check health, stop old."""
    script = root / "by-hand.py"
    script.write_text(d.service_source("9.9.9"))

    def start() -> tuple[subprocess.Popen[bytes], int]:
        port = d.free_port()
        env = {"PORT": str(port), "PATH": "/usr/bin:/bin"}
        process = subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        return process, port

    def healthy(port: int) -> None:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.01)

    old = [start() for _ in range(2)]
    for _, port in old:
        healthy(port)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        new = []
        for process, _ in old:
            replacement = start()
            healthy(replacement[1])
            new.append(replacement)
            process.terminate()
            process.wait()
        times.append(time.perf_counter() - started)
        old = new
    for process, _ in old:
        process.terminate()
        process.wait()
    return times


def run(quick: bool) -> BenchResult:
    rounds = 3 if quick else 10
    rollbacks: list[float] = []
    rollbacks_seen: list[float] = []
    promotions: list[float] = []
    failed_rollback = failed_promote = 0
    requests_rollback = requests_promote = 0
    with scratch_dir() as root:
        staging, production = d.free_port(), d.free_port()
        repo = make_repo(
            root / "shop",
            {
                "conveyor.yaml": _pipeline(staging, production),
                "service.py": d.service_source("1.0.0"),
                "deploy/production.env": "DB=production\n",
            },
        )
        home = root / "home"
        try:
            with running_daemon(home, "--kill-grace", "1") as daemon:
                good = d.build(daemon, repo)
                first = _deployed(daemon, d.deploy(daemon, "staging", good))
                assert first.status == delivery_pb2.DEPLOYMENT_STATUS_HEALTHY, first.reason
                broken = _release(repo, daemon, "2.0.0", "always")
                with d.polling(staging) as poller:
                    for _ in range(rounds):
                        started = time.perf_counter()
                        attempt = _deployed(daemon, d.deploy(daemon, "staging", broken))
                        rollbacks_seen.append(time.perf_counter() - started)
                        if attempt.status != delivery_pb2.DEPLOYMENT_STATUS_ROLLED_BACK:
                            raise RuntimeError(f"not rolled back: {attempt.reason}")
                        rollbacks.append(_elapsed(attempt))
                failed_rollback, requests_rollback = poller.failed, poller.ok + poller.failed

                versions = [good, _release(repo, daemon, "3.0.0")]
                promote = delivery_pb2.PromoteRequest(
                    from_environment="staging", environment="production"
                )
                first = _deployed(daemon, daemon.stub.Promote(promote, timeout=30))
                assert first.status == delivery_pb2.DEPLOYMENT_STATUS_HEALTHY, first.reason
                with d.polling(production) as poller:
                    for index in range(rounds):
                        digest = versions[(index + 1) % 2]
                        staged = _deployed(daemon, d.deploy(daemon, "staging", digest))
                        assert staged.status == delivery_pb2.DEPLOYMENT_STATUS_HEALTHY
                        started = time.perf_counter()
                        moved = _deployed(daemon, daemon.stub.Promote(promote, timeout=30))
                        if moved.status != delivery_pb2.DEPLOYMENT_STATUS_HEALTHY:
                            raise RuntimeError(f"promotion failed: {moved.reason}")
                        promotions.append(time.perf_counter() - started)
                failed_promote, requests_promote = poller.failed, poller.ok + poller.failed
        finally:
            d.stop_processes_of(home)
        by_hand = _by_hand(root, rounds)
    rollback = statistics.median(rollbacks)
    promotion = statistics.median(promotions)
    hand = statistics.median(by_hand)
    figures = [
        Figure(
            "process: failed health -> automatic rollback finished (median)",
            rollback,
            "s",
            TARGET_ROLLBACK_S,
            note=f"{rounds} rollbacks of 2 replicas, deployment created -> rolled back",
        ),
        Figure("  rollback, slowest", max(rollbacks), "s", TARGET_ROLLBACK_S),
        Figure("  rollback, seen by the client (median)", statistics.median(rollbacks_seen), "s"),
        Figure(
            "  failed requests during the rollbacks",
            failed_rollback,
            "requests",
            TARGET_FAILED_REQUESTS,
            note=f"of {requests_rollback}",
        ),
        Figure(
            "process: promote of 2 replicas -> all healthy (median)",
            promotion,
            "s",
            baseline=hand,
            baseline_name="the same roll by hand",
            note=f"{rounds} promotions, Promote call -> healthy",
        ),
        Figure(
            "  failed requests during the promotions",
            failed_promote,
            "requests",
            TARGET_FAILED_REQUESTS,
            note=f"of {requests_promote}",
        ),
    ]
    return BenchResult(
        NAME,
        figures,
        parameters={"rounds": rounds, "replicas": 2, "python": sys.version.split()[0]},
        samples={
            "rollback_s": [round(v, 4) for v in rollbacks],
            "rollback_seen_s": [round(v, 4) for v in rollbacks_seen],
            "promotion_s": [round(v, 4) for v in promotions],
            "by_hand_s": [round(v, 4) for v in by_hand],
        },
        summary={
            "rollback_s": describe(rollbacks),
            "promotion_s": describe(promotions),
            "by_hand_s": describe(by_hand),
        },
    )
