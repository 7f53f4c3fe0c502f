"""The built-in webhook notifier through a real daemon: a broken version
rolled back automatically is posted twice (the restore, then the failed
deployment) to a receiver on 127.0.0.1, configured by the daemon's
``[plugin_settings.webhook]``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from conveyor.v1 import delivery_pb2
from tests.support import delivery as d
from tests.support.daemon import DaemonProcess
from tests.support.receiver import receiving
from tests.support.repos import make_repo

S = delivery_pb2


def test_a_failure_with_automatic_rollback_is_posted_to_the_webhook(tmp_path: Path) -> None:
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    staging, production = d.free_port(), d.free_port()
    repo = make_repo(
        tmp_path / "shop",
        {
            "conveyor.yaml": d.pipeline(staging_port=staging, production_port=production),
            "service.py": d.service_source("1.0.0"),
            "deploy/production.env": "GREETING=from the env file\n",
        },
    )
    with receiving() as receiver:
        settings = {"webhook": {"url": receiver.url, "backoff": 0.1}}
        daemon = DaemonProcess(
            home,
            args=["--kill-grace", "1"],
            env={"CONVEYOR_PLUGIN_SETTINGS": json.dumps(settings)},
        ).start()
        try:
            good = d.build(daemon, repo)
            first = d.finished(daemon, d.deploy(daemon, "staging", good).id)
            assert first.status == S.DEPLOYMENT_STATUS_HEALTHY, first.reason
            repo.commit({"service.py": d.service_source("2.0.0", "always")}, "release 2.0.0")
            bad = d.build(daemon, repo)
            attempt = d.finished(daemon, d.deploy(daemon, "staging", bad).id)
            assert attempt.status == S.DEPLOYMENT_STATUS_ROLLED_BACK, attempt.reason
            restored, failed = receiver.wait_for(2)
        finally:
            daemon.stop()
            d.stop_processes_of(home)
    # the healthy first deployment was not sent (events = "failures")
    assert len(receiver.received) == 2
    assert restored.headers["X-Conveyor-Event"] == "automatic_rollback"
    assert restored.json["deployment_id"] == attempt.restored_by
    assert restored.json["cause_id"] == attempt.id
    assert restored.json["digest"] == good and restored.json["status"] == "healthy"
    body = failed.json
    assert failed.headers["X-Conveyor-Event"] == "deployment_failed"
    assert (body["environment"], body["deployment_id"], body["status"]) == (
        "staging",
        attempt.id,
        "rolled_back",
    )
    assert body["reason"] == attempt.reason and "health check" in body["reason"]
    assert (body["digest"], body["previous_digest"]) == (bad, good)
    assert body["version"].startswith("1.0.0-rc.2") and body["commit"] == attempt.commit
    assert body["deployer"] == attempt.deployer != ""
    assert body["restored_by"] == attempt.restored_by
    assert body["trace_id"] == attempt.trace_id and len(body["trace_id"]) == 32
    # only the listed fields: no configuration value reaches the payload
    assert "hello from staging" not in failed.body.decode()
