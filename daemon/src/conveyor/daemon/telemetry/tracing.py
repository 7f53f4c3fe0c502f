"""Spans of runs and stages.

A run span (kind SERVER, ``RUN {pipeline}``) starts when the run is
submitted (its parent is the trace context that came with the SubmitRun
call, if any) and ends when the run reaches a final status. Each stage gets
a child span (kind INTERNAL, ``{kind} {stage}``) from its first attempt to
its final status; retries and cancellation are span events. A stage's
process receives the stage span's context as ``TRACEPARENT``/``TRACESTATE``.
All of this runs in the trio thread and only touches memory; export happens
in a worker thread (see :mod:`conveyor.daemon.telemetry.export`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from conveyor.client.address import conveyor_home
from conveyor.daemon.records import RunRecord, StageRecord
from conveyor.daemon.telemetry import attributes as a
from conveyor.daemon.telemetry.metrics import Instruments
from conveyor.daemon.telemetry.urls import RunUrls
from conveyor.daemon.vcs import ref_type_of

_PROPAGATOR = TraceContextTextMapPropagator()
#: OpenTelemetry's attribute for the authenticated user of a request.
ENDUSER_ID = "enduser.id"
_ACTION = "RUN"


def _ns(seconds: float | None) -> int:
    return int((seconds if seconds is not None else time.time()) * 1e9)


def span_ids(span: trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def remote_context(trace_id: str, span_id: str) -> SpanContext | None:
    """A stored trace context, for links from later work."""
    try:
        context = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    except ValueError:
        return None
    return context if context.is_valid else None


class RunTracing:
    def __init__(
        self, tracer: trace.Tracer, instruments: Instruments, urls: RunUrls | None = None
    ) -> None:
        self._tracer = tracer
        self._instruments = instruments
        self.urls = urls if urls is not None else RunUrls.of_daemon(conveyor_home())
        self._runs: dict[str, trace.Span] = {}
        self._stages: dict[tuple[str, str], trace.Span] = {}
        self._stage_kinds: Mapping[str, object] = {}

    def use_stage_kinds(self, stage_kinds: Mapping[str, object]) -> None:
        """The installed stage kinds by name (kept, not copied), whose
        optional ``task_type`` attribute names their ``cicd.pipeline.task.type``."""
        self._stage_kinds = stage_kinds

    def task_type(self, kind: str) -> str:
        return a.task_type(kind, self._stage_kinds.get(kind))

    # -- runs ------------------------------------------------------------------

    def start_run(
        self,
        run: RunRecord,
        carrier: Mapping[str, str] | None = None,
        *,
        previous: SpanContext | None = None,
    ) -> tuple[str, str]:
        """Start the run's span; returns its (trace id, span id) in hex.

        ``carrier`` holds ``traceparent``/``tracestate`` from the caller: its
        context becomes the parent. ``previous`` is the span of an earlier
        attempt at the same run (a daemon restart), linked to.
        """
        parent = _PROPAGATOR.extract(carrier) if carrier else Context()
        ref_type = run.ref_type or ref_type_of(run.ref)
        attributes: dict[str, AttributeValue] = {
            a.PIPELINE_NAME: run.pipeline,
            a.PIPELINE_RUN_ID: run.id,
            a.PIPELINE_RUN_URL: self.urls.run(run.id),
            a.PIPELINE_ACTION_NAME: _ACTION,
            a.REPOSITORY_URL: f"file://{run.repository}",
            a.REF_HEAD_NAME: a.ref_name(run.ref),
            a.REF_HEAD_REVISION: run.commit,
            a.RUN_TRIGGER: run.trigger.value,
        }
        if ref_type:
            attributes[a.REF_HEAD_TYPE] = ref_type
        if run.submitted_by:
            # the authenticated identity, never a name the client sent
            attributes[ENDUSER_ID] = run.submitted_by
        span = self._tracer.start_span(
            f"{_ACTION} {run.pipeline}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=_ns(run.created_at),
            links=[Link(previous, {"conveyor.link": "previous_attempt"})] if previous else (),
        )
        self._runs[run.id] = span
        return span_ids(span)

    def run_stored(self, run: RunRecord) -> None:
        """The run is stored (and numbered): it counts as pending from now
        on, until :meth:`run_started` or :meth:`end_run`."""
        span = self._runs.get(run.id)
        if span is not None:
            span.set_attribute(a.RUN_NUMBER, run.number)
        self._instruments.run_queued(run.pipeline)

    def run_started(self, run: RunRecord) -> None:
        span = self._runs.get(run.id)
        if span is not None:
            span.add_event("started", timestamp=_ns(run.started_at))
            if run.version:
                span.set_attribute(a.RUN_VERSION, run.version)
        self._instruments.run_started(run.pipeline, (run.started_at or 0) - run.created_at)

    def run_event(self, run_id: str, name: str, attributes: Mapping[str, AttributeValue]) -> None:
        span = self._runs.get(run_id)
        if span is not None:
            span.add_event(name, dict(attributes))

    def end_run(self, run: RunRecord, error_type: str = "") -> None:
        """End the run's span with its result; record run metrics."""
        span = self._runs.pop(run.id, None)
        result = a.RUN_RESULTS.get(run.status, "error")
        if result in ("failure", "error", "timeout") and not error_type:
            error_type = "timeout" if result == "timeout" else "_OTHER"
        if result in ("success", "cancellation"):
            error_type = ""
        started = run.started_at is not None
        self._instruments.run_finished(
            run.pipeline,
            started=started,
            duration=(run.finished_at or time.time()) - (run.started_at or run.created_at),
            result=result,
            error_type=error_type,
        )
        if span is None:
            return
        span.set_attribute(a.PIPELINE_RESULT, result)
        span.set_attribute(a.RUN_NUMBER, run.number)
        if run.reason:
            span.set_attribute(a.RUN_REASON, run.reason)
        if error_type:
            span.set_attribute(a.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, run.reason or result))
        span.end(end_time=_ns(run.finished_at))

    def drop_run(
        self, run_id: str, *, duplicate_of: str = "", error: BaseException | None = None
    ) -> None:
        """End the span of a run that was not stored after all: an earlier
        run had its idempotency key (``duplicate_of``), or storing it failed
        (``error``). Nothing was counted for it."""
        span = self._runs.pop(run_id, None)
        if span is None:
            return
        if duplicate_of:
            span.set_attribute("conveyor.run.duplicate_of", duplicate_of)
        if error is not None:
            span.set_attribute(a.ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"the run was not stored: {error}"))
        span.end()

    # -- stages ----------------------------------------------------------------

    def start_stage(self, run: RunRecord, stage: StageRecord) -> dict[str, str]:
        """Start the stage's span; returns the environment variables that
        carry its context to the stage's processes."""
        parent_span = self._runs.get(run.id)
        parent = trace.set_span_in_context(parent_span) if parent_span else Context()
        span = self._tracer.start_span(
            f"{stage.kind} {stage.name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={
                a.PIPELINE_NAME: run.pipeline,
                a.PIPELINE_RUN_ID: run.id,
                a.TASK_NAME: stage.name,
                a.TASK_RUN_ID: f"{run.id}/{stage.name}",
                a.TASK_RUN_URL: self.urls.stage(run.id, stage.name),
                a.TASK_TYPE: self.task_type(stage.kind),
                a.TASK_KIND: stage.kind,
            },
            start_time=_ns(stage.started_at),
        )
        self._stages[(run.id, stage.name)] = span
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        return {key.upper(): value for key, value in carrier.items()}

    def stage_event(
        self, run_id: str, stage: str, name: str, attributes: Mapping[str, AttributeValue]
    ) -> None:
        span = self._stages.get((run_id, stage))
        if span is not None:
            span.add_event(name, dict(attributes))

    def end_stage(
        self,
        run: RunRecord,
        stage: StageRecord,
        error_type: str = "",
        *,
        system_error: bool = False,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        """End the stage's span with its result (a stage that never started
        gets a zero-length span, so skips show in the trace).

        ``system_error`` marks a failure of Conveyor or a plugin rather than
        of the code under test: the result is then ``error``."""
        span = self._stages.pop((run.id, stage.name), None)
        if span is None:
            started = stage.finished_at
            placeholder = dataclasses.replace(stage, started_at=started)
            self.start_stage(run, placeholder)
            span = self._stages.pop((run.id, stage.name))
        result = a.TASK_RESULTS.get(stage.status, "error")
        if result in ("failure", "error", "timeout") and not error_type:
            error_type = "timeout" if result == "timeout" else "_OTHER"
        if result in ("success", "cancellation", "skip"):
            error_type = ""
        if system_error and result == "failure":
            result = "error"  # Conveyor or a plugin failed, not the code under test
        if attributes:
            span.set_attributes(dict(attributes))
        span.set_attribute(a.TASK_RUN_RESULT, result)
        span.set_attribute(a.TASK_ATTEMPTS, stage.attempt)
        if stage.exit_code is not None:
            span.set_attribute(a.TASK_EXIT_CODE, stage.exit_code)
        if error_type:
            span.set_attribute(a.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, stage.reason or result))
        span.end(end_time=_ns(stage.finished_at))
        duration = (stage.finished_at or 0) - (stage.started_at or stage.finished_at or 0)
        self._instruments.task_finished(
            run.pipeline, stage.name, self.task_type(stage.kind), result, duration
        )
