"""The webhook notifier in-process, against a receiver on 127.0.0.1: what it
sends and when, retries with backoff (bounded), refusals, signatures,
secrets masked, and settings checked when the daemon loads it."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from conveyor.daemon.delivery.records import DeploymentKind, DeploymentStatus
from conveyor.daemon.plugins import Plugins
from conveyor.daemon.secrets.redaction import REDACTOR
from conveyor.daemon.views import deployment_view
from conveyor.plugin import Deployment
from conveyor.plugins import webhook
from tests.support.receiver import Receiver, receiving
from tests.unit.delivery.support import record

S = DeploymentStatus


def failed_and_restored() -> tuple[Deployment, Deployment]:
    """A deployment rolled back automatically, and the restore that did it."""
    previous = record("staging", S.HEALTHY, n=1)
    failed = dataclasses.replace(
        record("staging", S.ROLLED_BACK, n=2),
        reason="replica on port 41001 failed its health check: HTTP 503",
        previous_id=previous.id,
        previous_digest=previous.digest,
        started_at=1_800_000_000.0,
        finished_at=1_800_000_004.5,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
    )
    restore = dataclasses.replace(
        record("staging", S.HEALTHY, n=1),
        kind=DeploymentKind.RESTORE,
        deployer="conveyor (automatic rollback)",
        reason=f"restored deployment {previous.id} after deployment {failed.id} failed",
        restores_id=previous.id,
        cause_id=failed.id,
        previous_id=failed.id,
        previous_digest=failed.digest,
        finished_at=1_800_000_004.4,
    )
    failed = dataclasses.replace(failed, restored_by=restore.id)
    return deployment_view(failed), deployment_view(restore)


def configured(receiver: Receiver, **settings: Any) -> webhook.Webhook:
    notifier = webhook.Webhook()
    notifier.conveyor_configure({"url": receiver.url, "backoff": 0, **settings})
    return notifier


async def test_a_failure_and_its_automatic_rollback_are_posted_with_their_summary() -> None:
    failed, restore = failed_and_restored()
    with receiving() as receiver:
        notifier = configured(receiver, trace_url="https://traces.example/t/{trace_id}")
        await notifier.conveyor_deployment_finished(restore)
        await notifier.conveyor_deployment_finished(failed)
        first, second = receiver.wait_for(2)
    assert first.path == "/hooks/conveyor"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["X-Conveyor-Event"] == "automatic_rollback"
    assert first.headers["X-Conveyor-Delivery"] == f"{restore.id}.automatic_rollback"
    assert first.json["cause_id"] == failed.id and first.json["status"] == "healthy"
    body = second.json
    assert body == {
        "event": "deployment_failed",
        "text": "deployment of service.py 1.0.2 to staging rolled_back: replica on port 41001"
        " failed its health check: HTTP 503",
        "environment": "staging",
        "deployment_id": failed.id,
        "kind": "deploy",
        "status": "rolled_back",
        "reason": "replica on port 41001 failed its health check: HTTP 503",
        "digest": failed.digest,
        "artifact": "service.py",
        "version": "1.0.2",
        "commit": "a" * 40,
        "deployer": "uid:1000",
        "pipeline": "shop",
        "run_id": failed.run_id,
        "run_number": 2,
        "previous_id": failed.previous_id,
        "previous_digest": failed.previous_digest,
        "restored_by": restore.id,
        "restores_id": "",
        "cause_id": "",
        "created_at": body["created_at"],
        "started_at": "2027-01-15T08:00:00Z",
        "finished_at": "2027-01-15T08:00:04.500000Z",
        "duration_seconds": 4.5,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "links": {"trace": "https://traces.example/t/0af7651916cd43dd8448eb211c80319c"},
    }
    assert "X-Conveyor-Signature-256" not in second.headers
    assert notifier.sent == 2 and notifier.failed == 0


async def test_healthy_deployments_are_sent_only_when_asked_for() -> None:
    healthy = deployment_view(record("production", S.HEALTHY))
    expired = deployment_view(record("production", S.EXPIRED))
    with receiving() as receiver:
        quiet = configured(receiver)
        await quiet.conveyor_deployment_finished(healthy)
        await quiet.conveyor_deployment_finished(expired)
        assert receiver.received == [] and quiet.sent == 0
        chatty = configured(receiver, events="all")
        await chatty.conveyor_deployment_finished(healthy)
        (got,) = receiver.wait_for(1)
    assert got.json["event"] == "deployment_finished" and got.json["status"] == "healthy"


async def test_failed_attempts_are_retried_with_backoff_then_given_up() -> None:
    failed, _ = failed_and_restored()
    with receiving(answers=[503, 502]) as receiver:
        notifier = configured(receiver, attempts=3)
        await notifier.conveyor_deployment_finished(failed)
        assert len(receiver.wait_for(3)) == 3 and notifier.sent == 1
    with receiving(answers=[503, 503, 503]) as receiver:
        notifier = configured(receiver, attempts=2)
        await notifier.conveyor_deployment_finished(failed)
        assert len(receiver.received) == 2 and notifier.failed == 1
    with receiving(answers=[404]) as receiver:
        notifier = configured(receiver, attempts=3)
        await notifier.conveyor_deployment_finished(failed)
        assert len(receiver.received) == 1 and notifier.failed == 1  # a refusal is final


async def test_an_unreachable_receiver_costs_at_most_the_budget() -> None:
    failed, _ = failed_and_restored()
    with receiving() as receiver:
        url = receiver.url
    notifier = webhook.Webhook()  # nothing listens there any more
    notifier.conveyor_configure({"url": url, "attempts": 3, "backoff": 0.01, "timeout": 1})
    with trio.fail_after(10):
        await notifier.conveyor_deployment_finished(failed)
    assert notifier.failed == 1


async def test_secrets_are_masked_and_bodies_signed(tmp_path: Path) -> None:
    REDACTOR.add({"DB_PASSWORD": "hunter2-webhook-secret"})
    failed, _ = failed_and_restored()
    leaky = dataclasses.replace(failed, reason="replica said: password hunter2-webhook-secret")
    key = tmp_path / "webhook.secret"
    key.write_text("signing-key\n")
    with receiving() as receiver:
        notifier = configured(receiver, secret_file=str(key))
        await notifier.conveyor_deployment_finished(leaky)
        (got,) = receiver.wait_for(1)
    assert b"hunter2" not in got.body
    assert got.json["reason"] == "replica said: password ***"
    expected = hmac.new(b"signing-key", got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Conveyor-Signature-256"] == f"sha256={expected}"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"events": "all"}, "plugin_settings.webhook.url: required parameter 'url' is missing"),
        ({"url": "ftp://127.0.0.1/x"}, "expected an http:// or https:// URL"),
        ({"url": "http://127.0.0.1:9/", "retries": 2}, "unknown parameter 'retries'"),
        ({"url": "http://127.0.0.1:9/", "attempts": 10, "timeout": 5}, "keep it at most 25s"),
        ({"url": "http://127.0.0.1:9/", "trace_url": "{trace}"}, "is not a template"),
        ({"url": "http://127.0.0.1:9/", "secret_file": "/nonexistent/k"}, "cannot read"),
    ],
)
def test_bad_settings_take_the_notifier_out_and_say_why(
    settings: Mapping[str, Any], message: str
) -> None:
    plugins = Plugins(settings={"webhook": settings})
    info = plugins.register(webhook.Webhook(), "webhook")
    assert message in info.error, info.error
    assert not plugins._implemented("conveyor_deployment_finished")


def test_without_settings_the_notifier_is_off() -> None:
    notifier = webhook.Webhook()
    plugins = Plugins()
    assert not plugins.register(notifier, "webhook").error
    assert notifier.settings is None
