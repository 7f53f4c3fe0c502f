"""`conveyor dora` and `conveyor stop` end to end: a real daemon deploys a
good version and a broken one (rolled back automatically); the DORA
figures printed by the CLI are the ones the deployments' own times give;
stopping the environment stops its replicas and front proxy, for good
(a restarted daemon does not start them again)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from conveyor.v1 import delivery_pb2
from tests.support import delivery as d
from tests.support.daemon import DaemonProcess
from tests.support.otlp import OtlpReceiver
from tests.support.repos import make_repo

S = delivery_pb2
CLI = [sys.executable, "-m", "conveyor.client.cli"]


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--address", daemon.address, *args], capture_output=True, text=True, timeout=120
    )


def processes_of(home: Path, but: int) -> list[int]:
    """Processes (replicas, proxies) whose command line names ``home``,
    other than the daemon (pid ``but``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == but:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(home).encode() in cmdline:
            found.append(int(entry))
    return found


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    try:
        yield home
    finally:
        d.stop_processes_of(home)


def gauge(receiver: OtlpReceiver, name: str, environment: str) -> float | None:
    """The latest value the daemon exported for a gauge of an environment."""
    with receiver.lock:
        metrics = [m for m in receiver.metrics if m.name == name]
    for metric in reversed(metrics):
        for point in metric.gauge.data_points:
            attributes = {a.key: a.value.string_value for a in point.attributes}
            if attributes.get("deployment.environment.name") == environment:
                return float(point.as_double)
    return None


def seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def test_dora_figures_and_stopping_an_environment_through_the_cli(
    home: Path, tmp_path: Path
) -> None:
    staging, production = d.free_port(), d.free_port()
    repo = make_repo(
        tmp_path / "shop",
        {
            "conveyor.yaml": d.pipeline(staging_port=staging, production_port=production),
            "service.py": d.service_source("1.0.0"),
        },
    )
    receiver = OtlpReceiver().start()
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "300"}
    daemon = DaemonProcess(home, args=["--kill-grace", "1"], env=otlp).start()
    try:
        good = d.build(daemon, repo)
        first = d.finished(daemon, d.deploy(daemon, "staging", good).id)
        assert first.status == S.DEPLOYMENT_STATUS_HEALTHY, first.reason
        repo.commit({"service.py": d.service_source("2.0.0", "always")}, "release 2.0.0")
        bad = d.build(daemon, repo)
        failed = d.finished(daemon, d.deploy(daemon, "staging", bad).id)
        assert failed.status == S.DEPLOYMENT_STATUS_ROLLED_BACK, failed.reason
        restore = d.finished(daemon, failed.restored_by)
        # the figures are gauges too, computed again as deployments end
        d.wait_for(
            lambda: gauge(receiver, "conveyor.dora.change_failure_rate", "staging") == 0.5,
            what="the change failure rate gauge",
        )
        assert gauge(receiver, "conveyor.dora.deployment.frequency", "staging") == pytest.approx(
            1 / 30
        )

        shown = cli(daemon, "dora", "staging", "--window", "1d")
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].startswith("DORA figures of staging, the last 1 days (")
        assert "deployment frequency:   1 deployment, 1.00/day" in shown.stdout
        assert "change failure rate:    50% (1 of 2 changes failed)" in shown.stdout
        assert "(1 change)" in shown.stdout and "(1 restored, 0 not restored)" in shown.stdout

        as_json = cli(daemon, "--output", "json", "dora", "staging")
        assert as_json.returncode == 0, as_json.stderr
        figures = json.loads(as_json.stdout)
        lead_time = seconds(first.healthy_at) - seconds(first.commit_time)
        to_restore = seconds(restore.healthy_at) - seconds(failed.started_at)
        assert figures["deployments"] == 1 and figures["changes"] == 2
        assert figures["failed_changes"] == 1 and figures["change_failure_rate"] == 0.5
        assert figures["lead_time_median_seconds"] == pytest.approx(lead_time, abs=1e-3)
        assert figures["time_to_restore_median_seconds"] == pytest.approx(to_restore, abs=1e-3)
        assert figures["restored"] == 1 and figures["unrestored"] == 0
        # the default window is dora_window_days (30 days)
        assert seconds_between(figures) == pytest.approx(30 * 86400, abs=5)

        # production is in the pipeline file but was never deployed to
        unknown = cli(daemon, "dora", "production")
        assert unknown.returncode == 1 and "no environment 'production'" in unknown.stderr
        bad_window = cli(daemon, "dora", "staging", "--window", "5s")
        assert bad_window.returncode == 1 and "window must be between 60" in bad_window.stderr
        assert cli(daemon, "dora", "staging", "--window", "soon").returncode == 2

        assert daemon.proc is not None
        assert processes_of(home, daemon.proc.pid), "replicas and a proxy run"
        stopped = cli(daemon, "stop", "staging")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.startswith("stopped staging: 2 replica(s) and the front proxy;")
        assert restore.id in stopped.stdout
        assert refused(staging)
        assert processes_of(home, daemon.proc.pid) == []
        envs = cli(daemon, "envs")
        assert envs.returncode == 0 and good[:19] not in envs.stdout
        history = daemon.stub.GetDeployment(
            delivery_pb2.GetDeploymentRequest(deployment_id=restore.id), timeout=10
        )
        assert history.status == S.DEPLOYMENT_STATUS_HEALTHY and history.stopped_by
        assert "environment staging stopped by" in history.events[-1].message
        again = cli(daemon, "stop", "staging")
        assert again.returncode == 0 and again.stdout.strip() == "staging: nothing was running"
        promote = cli(daemon, "promote", "staging", "production")
        assert promote.returncode == 1 and "nothing healthy runs in staging" in promote.stderr

        # a restarted daemon leaves it stopped
        daemon.stop()
        daemon.start()
        assert daemon.proc is not None
        d.wait_for(lambda: "recovery" not in cli(daemon, "envs").stdout, what="the recovery")
        assert refused(staging) and processes_of(home, daemon.proc.pid) == []
        # and a deployment starts it again
        back = d.finished(daemon, d.deploy(daemon, "staging", good).id)
        assert back.status == S.DEPLOYMENT_STATUS_HEALTHY, back.reason
        assert d.version_at(staging)["version"] == "1.0.0"
    finally:
        daemon.stop()
        receiver.stop()


def seconds_between(figures: dict[str, str]) -> float:
    from datetime import datetime

    def parse(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    return parse(figures["window_end"]) - parse(figures["window_start"])
