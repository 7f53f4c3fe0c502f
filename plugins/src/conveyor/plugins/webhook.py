"""The webhook notifier: a JSON summary of each deployment that fails or is
rolled back automatically, POSTed to a URL (a chat's incoming webhook, an
alert manager, your own receiver).

Configured in the daemon's configuration (``conveyord.toml``)::

    [plugin_settings.webhook]
    url = "https://alerts.example.com/hooks/conveyor"
    events = "failures"        # or "all": every deployment that ends
    timeout = 5                # seconds per attempt
    attempts = 3               # tries, with pauses of backoff, 2 x backoff, ...
    backoff = 0.5
    secret_file = "/etc/conveyor/webhook.secret"   # signs each body (HMAC-SHA256)
    trace_url = "https://tracing.example.com/trace/{trace_id}"

Without a ``url`` the notifier is off. What is sent, when, and how it is
retried is in docs/plugins.md ("The webhook notifier"). Only what the
payload lists is sent, text masked of every secret the daemon holds.

Never blocks the daemon: the POST runs in a worker thread with a timeout,
and the attempts and pauses together are bounded (at most
:data:`MAX_BUDGET` seconds), so one unreachable receiver delays the other
notifications by that much at most.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import trio
from pydantic import AfterValidator, Field, ValidationError, model_validator

from conveyor.plugin import (
    Deployment,
    DeploymentKind,
    DeploymentStatus,
    Parameters,
    hookimpl,
    parameter_problems,
    redact,
)

log = logging.getLogger(__name__)

NAME: Final = "webhook"
#: Longest time, in seconds, the attempts and pauses of one notification may
#: take together (below the daemon's default hook_timeout of 30 s).
MAX_BUDGET: Final = 25.0
#: What a notification is about (the payload's ``event``).
FAILED: Final = "deployment_failed"
RESTORED: Final = "automatic_rollback"
FINISHED: Final = "deployment_finished"
#: Final statuses of a deployment (other than a restore) that are failures.
FAILURES: Final = frozenset(
    {DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK, DeploymentStatus.INTERRUPTED}
)
#: HTTP answers worth another attempt.
RETRY_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


def _http_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    return url


def _template(text: str) -> str:
    try:
        text.format(trace_id="0" * 32, span_id="0" * 16)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{text!r} is not a template of {{trace_id}} and {{span_id}}: {exc}"
        ) from None
    return text


class WebhookSettings(Parameters):
    """``[plugin_settings.webhook]``."""

    url: Annotated[str, AfterValidator(_http_url)]
    events: Literal["failures", "all"] = "failures"
    timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    attempts: Annotated[int, Field(ge=1, le=10)] = 3
    backoff: Annotated[float, Field(ge=0, le=30)] = 0.5
    secret_file: str = ""
    trace_url: Annotated[str, AfterValidator(_template)] = ""

    @model_validator(mode="after")
    def _bounded(self) -> WebhookSettings:
        if self.budget > MAX_BUDGET:
            raise ValueError(
                f"attempts x timeout plus the pauses between them is {self.budget:g}s; keep it"
                f" at most {MAX_BUDGET:g}s (the notifications after this one wait meanwhile)"
            )
        return self

    @property
    def budget(self) -> float:
        """The longest one notification may take: every attempt timing out."""
        pauses = sum(self.backoff * 2.0**i for i in range(self.attempts - 1))
        return float(self.attempts * self.timeout + pauses)


class _Retry(Exception):
    """An attempt failed in a way another attempt may not."""


class _GiveUp(Exception):
    """The receiver refused the notification: another attempt would too."""


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST ``body`` to ``url`` (blocking: run it in a worker thread); the
    HTTP status of a 2xx answer. Raises :class:`_Retry` or :class:`_GiveUp`.
    The environment's proxy settings apply, except to a loopback address."""
    handlers = [urllib.request.ProxyHandler({})] if _is_loopback(url) else []
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with opener.open(request, timeout=timeout) as answer:  # nosec B310: http(s) only
            answer.read(65536)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        why = f"HTTP {exc.code} {exc.reason}"
        raise (_Retry if exc.code in RETRY_STATUSES else _GiveUp)(why) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Retry(str(reason) or type(exc).__name__) from None


def _time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def event_of(deployment: Deployment, events: str) -> str:
    """What the notification is about; "" when it is not sent."""
    if deployment.kind is DeploymentKind.RESTORE:
        return RESTORED
    if deployment.status in FAILURES:
        return FAILED
    return FINISHED if events == "all" else ""


def payload(deployment: Deployment, event: str, trace_url: str = "") -> dict[str, Any]:
    """The JSON summary of ``deployment``: these fields only, text masked
    of the daemon's secrets."""
    d = deployment
    text = {
        RESTORED: f"automatic rollback in {d.environment}: {d.artifact_name} {d.version}"
        f" is back ({d.status.value})",
        FAILED: f"deployment of {d.artifact_name} {d.version} to {d.environment} {d.status.value}",
        FINISHED: f"deployment of {d.artifact_name} {d.version} to {d.environment}"
        f" {d.status.value}",
    }[event]
    links = {}
    if trace_url and d.trace_id:
        links["trace"] = trace_url.format(trace_id=d.trace_id, span_id=d.span_id)
    return {
        "event": event,
        "text": redact(f"{text}: {d.reason}" if d.reason else text),
        "environment": d.environment,
        "deployment_id": d.id,
        "kind": d.kind.value,
        "status": d.status.value,
        "reason": redact(d.reason),
        "digest": d.digest,
        "artifact": redact(d.artifact_name),
        "version": d.version,
        "commit": d.commit,
        "deployer": redact(d.deployer),
        "pipeline": d.pipeline,
        "run_id": d.run_id,
        "run_number": d.run_number,
        "previous_id": d.previous_id,
        "previous_digest": d.previous_digest,
        "restored_by": d.restored_by,
        "restores_id": d.restores_id,
        "cause_id": d.cause_id,
        "created_at": _time(d.created_at),
        "started_at": _time(d.started_at),
        "finished_at": _time(d.finished_at),
        "duration_seconds": d.duration,
        "trace_id": d.trace_id,
        "span_id": d.span_id,
        "links": links,
    }


class Webhook:
    """The notifier: settings from ``conveyor_configure``, a POST per
    notification from ``conveyor_deployment_finished``."""

    def __init__(self) -> None:
        self.settings: WebhookSettings | None = None
        self._secret = b""
        #: Notifications delivered, and given up on.
        self.sent = 0
        self.failed = 0

    @hookimpl
    def conveyor_configure(self, settings: Mapping[str, Any]) -> None:
        if not settings:
            self.settings = None
            log.info("webhook: no [plugin_settings.webhook] url; notifications are off")
            return
        try:
            parsed = WebhookSettings.model_validate(dict(settings))
        except ValidationError as exc:
            problems = parameter_problems(exc, WebhookSettings, NAME)
            raise ValueError(
                "; ".join(
                    f"plugin_settings.{NAME}{field.removeprefix('with')}: {message}"
                    for field, message in problems
                )
            ) from None
        secret = b""
        if parsed.secret_file:
            path = Path(parsed.secret_file).expanduser()
            try:
                secret = path.read_bytes().strip()
            except OSError as exc:
                raise ValueError(
                    f"plugin_settings.{NAME}.secret_file: cannot read {path}: {exc.strerror}"
                ) from None
            if not secret:
                raise ValueError(f"plugin_settings.{NAME}.secret_file: {path} is empty")
        self.settings, self._secret = parsed, secret
        log.info(
            "webhook: deployment notifications (%s) go to %s", parsed.events, _site(parsed.url)
        )

    @hookimpl
    async def conveyor_deployment_finished(self, deployment: Deployment) -> None:
        settings = self.settings
        if settings is None:
            return
        event = event_of(deployment, settings.events)
        if not event:
            return
        body = json.dumps(payload(deployment, event, settings.trace_url)).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "conveyor-webhook",
            "X-Conveyor-Event": event,
            "X-Conveyor-Delivery": f"{deployment.id}.{event}",
        }
        if self._secret:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Conveyor-Signature-256"] = f"sha256={digest}"
        await self.deliver(settings, body, headers, f"{event} {deployment.id}")

    async def deliver(
        self, settings: WebhookSettings, body: bytes, headers: Mapping[str, str], about: str
    ) -> bool:
        """POST ``body`` with retries (bounded by the settings); whether
        the receiver took it. Failures are logged, never raised."""
        pause = settings.backoff
        why = ""
        for attempt in range(1, settings.attempts + 1):
            try:
                await trio.to_thread.run_sync(
                    functools.partial(post, settings.url, body, headers, settings.timeout),
                    abandon_on_cancel=True,
                )
            except _GiveUp as exc:
                why = str(exc)
                break
            except _Retry as exc:
                why = str(exc)
                if attempt < settings.attempts:
                    log.warning(
                        "webhook: %s to %s failed (%s); attempt %d of %d in %gs",
                        about,
                        _site(settings.url),
                        why,
                        attempt + 1,
                        settings.attempts,
                        pause,
                    )
                    await trio.sleep(pause)
                    pause *= 2
                continue
            self.sent += 1
            return True
        self.failed += 1
        log.error("webhook: gave up on %s to %s: %s", about, _site(settings.url), why)
        return False


def _site(url: str) -> str:
    """Where a URL points, without its path and query (which may hold a token)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


#: The plugin the entry point registers.
_webhook = Webhook()
conveyor_configure = _webhook.conveyor_configure
conveyor_deployment_finished = _webhook.conveyor_deployment_finished
