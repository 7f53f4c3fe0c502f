"""Spans and metrics of deployments.

A deployment span (kind INTERNAL, ``DEPLOY {environment}``) starts when the
deployment is created and ends at its final status. Its parent is the
trace context of the call that asked for it (a ``deploy`` stage's span, or
the ``traceparent`` sent with the RPC); it links to the run that built the
artifact (the artifact stores that run's trace context). Attributes:
``deployment.environment.name``, ``deployment.id``, ``deployment.status``,
the artifact's (``artifact.hash``, ``artifact.version``, and
``artifact.filename`` or ``container.image.name``), the deployer
(``enduser.id``), and Conveyor's own ``conveyor.deployment.*``.

Metrics: ``conveyor.deployment.count`` (deployments that ended, by
environment and status) and ``conveyor.deployment.duration``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from conveyor.daemon.artifacts.model import OCI_IMAGE
from conveyor.daemon.delivery.records import DeploymentRecord, DeploymentStatus
from conveyor.daemon.telemetry import attributes as a
from conveyor.daemon.telemetry.metrics import DURATION_BUCKETS
from conveyor.daemon.telemetry.tracing import remote_context, span_ids

_PROPAGATOR = TraceContextTextMapPropagator()

DEPLOYMENT_KIND = "conveyor.deployment.kind"
DEPLOYMENT_TARGET = "conveyor.deployment.target"
DEPLOYMENT_REASON = "conveyor.deployment.reason"
DEPLOYMENT_SOURCE = "conveyor.deployment.source_environment"
DEPLOYMENT_PREVIOUS = "conveyor.deployment.previous.id"
DEPLOYMENT_CONFIG_CHANGED = "conveyor.deployment.config.changed"
DEPLOYMENT_COMMITS = "conveyor.deployment.commits"

#: Final statuses that are not a success, as ``error.type``.
_ERRORS = {
    DeploymentStatus.FAILED: "failed",
    DeploymentStatus.ROLLED_BACK: "rolled_back",
    DeploymentStatus.INTERRUPTED: "interrupted",
    DeploymentStatus.EXPIRED: "expired",
}


def _ns(seconds: float | None) -> int:
    return int((seconds if seconds is not None else time.time()) * 1e9)


class DeploymentTracing:
    def __init__(self, tracer: trace.Tracer, meter: Meter) -> None:
        self._tracer = tracer
        self._spans: dict[str, trace.Span] = {}
        self.count = meter.create_counter(
            "conveyor.deployment.count",
            unit="{deployment}",
            description="Deployments that ended, by environment and final status.",
        )
        self.duration = meter.create_histogram(
            "conveyor.deployment.duration",
            unit="s",
            description="Duration of deployments from start to final status.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def start(
        self,
        record: DeploymentRecord,
        *,
        artifact_trace: tuple[str, str] = ("", ""),
        carrier: Mapping[str, str] | None = None,
    ) -> tuple[str, str]:
        """Start the deployment's span; returns its (trace id, span id) in hex."""
        parent = _PROPAGATOR.extract(carrier) if carrier else Context()
        attributes: dict[str, AttributeValue] = {
            a.DEPLOYMENT_ENVIRONMENT: record.environment,
            a.DEPLOYMENT_ID: record.id,
            a.DEPLOYMENT_STATUS: record.status.value,
            a.ARTIFACT_HASH: record.digest,
            a.ARTIFACT_VERSION: record.version,
            a.ENDUSER_ID: record.deployer,
            a.REF_HEAD_REVISION: record.commit,
            a.PIPELINE_NAME: record.pipeline,
            DEPLOYMENT_KIND: record.kind.value,
            DEPLOYMENT_TARGET: record.target,
            DEPLOYMENT_CONFIG_CHANGED: record.config_changed,
            DEPLOYMENT_COMMITS: record.commits_total,
        }
        if record.artifact_kind == OCI_IMAGE:
            attributes[a.CONTAINER_IMAGE_NAME] = record.artifact_name
        else:
            attributes[a.ARTIFACT_FILENAME] = record.artifact_name
        if record.source_environment:
            attributes[DEPLOYMENT_SOURCE] = record.source_environment
        if record.previous_id:
            attributes[DEPLOYMENT_PREVIOUS] = record.previous_id
        built_by = remote_context(*artifact_trace)
        span = self._tracer.start_span(
            f"DEPLOY {record.environment}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=_ns(record.created_at),
            links=[Link(built_by, {"conveyor.link": "artifact_build"})] if built_by else (),
        )
        self._spans[record.id] = span
        return span_ids(span)

    def event(
        self, deployment_id: str, name: str, attributes: Mapping[str, AttributeValue]
    ) -> None:
        span = self._spans.get(deployment_id)
        if span is not None:
            span.add_event(name, dict(attributes))

    def end(self, record: DeploymentRecord) -> None:
        """End the deployment's span with its final status; count it."""
        outcome = {
            a.DEPLOYMENT_ENVIRONMENT: record.environment,
            a.DEPLOYMENT_STATUS: record.status.value,
        }
        self.count.add(1, outcome)
        if record.duration is not None:
            self.duration.record(record.duration, outcome)
        span = self._spans.pop(record.id, None)
        if span is None:
            return
        span.set_attribute(a.DEPLOYMENT_STATUS, record.status.value)
        if record.reason:
            span.set_attribute(DEPLOYMENT_REASON, record.reason)
        error = _ERRORS.get(record.status)
        if error:
            span.set_attribute(a.ERROR_TYPE, error)
            span.set_status(Status(StatusCode.ERROR, record.reason or error))
        span.end(end_time=_ns(record.finished_at))
