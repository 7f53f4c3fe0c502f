"""Spans when nothing exports them: real ids, nothing recorded, counted.

With no trace exporter configured, building full SDK spans (attributes,
events, a processor chain) for every run and stage is work nobody reads.
:class:`CountingTracer` gives non-recording spans instead that still carry
what the rest of the daemon needs: valid ids in the run's trace (stored with
the run, shown by ``conveyor show``, handed to stage processes as
``TRACEPARENT``), the parent's trace and sampling decision, and a count of
the spans that ended, for ``conveyor status``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import AttributeValue


class EndedSpans:
    """How many spans ended (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ended = 0

    def add(self) -> None:
        with self._lock:
            self.ended += 1


class _CountedSpan(NonRecordingSpan):
    """A span that records nothing and counts its end (once)."""

    def __init__(self, context: SpanContext, ended: EndedSpans) -> None:
        super().__init__(context)
        self._ended = ended
        self._done = False

    def end(self, end_time: int | None = None) -> None:
        if not self._done:
            self._done = True
            self._ended.add()


class CountingTracer(trace.Tracer):
    """Starts :class:`_CountedSpan` s: new ids in the parent's trace (a new
    trace without one), the parent's sampling flags (sampled without one),
    as the SDK's default sampler decides."""

    def __init__(self, ended: EndedSpans) -> None:
        self.ended = ended
        self._ids = RandomIdGenerator()

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
        else:
            trace_id, state = self._ids.generate_trace_id(), None
            flags = TraceFlags(TraceFlags.SAMPLED)
        span_context = SpanContext(
            trace_id=trace_id,
            span_id=self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=state,
        )
        return _CountedSpan(span_context, self.ended)

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(span, end_on_exit=end_on_exit) as current:
            yield current
