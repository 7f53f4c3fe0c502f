"""A bounded, counting batch span processor.

Export never slows a pipeline: ended spans go into a bounded queue that a
worker thread drains into the exporter. When the queue is full (a receiver
that is down or slow), spans are dropped and counted, never waited for.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from conveyor.daemon.secrets.masking import Masker
from conveyor.daemon.secrets.redaction import REDACTOR

log = logging.getLogger(__name__)


@dataclass
class ExportStats:
    ended: int = 0
    exported: int = 0
    failed: int = 0
    dropped: int = 0


class SpanCounter(SpanProcessor):
    """Counts the spans that end, whether or not any exporter takes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.ended += 1


class BoundedBatchSpanProcessor(SpanProcessor):
    """Batches ended spans to an exporter from a worker thread."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int = 2048,
        max_batch_size: int = 512,
        schedule_delay: float = 0.5,
    ) -> None:
        self.exporter = exporter
        self.stats = ExportStats()
        self._queue: queue.Queue[ReadableSpan | None] = queue.Queue(max_queue_size)
        self._max_batch = max_batch_size
        self._delay = schedule_delay
        self._lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)
        self._in_flight = 0
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._run, name="conveyor-span-export", daemon=True)
        self._worker.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self._stopping.is_set():
            return
        with self._lock:
            self.stats.ended += 1
        try:
            self._queue.put_nowait(span)
        except queue.Full:
            with self._lock:
                self.stats.dropped += 1

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._delay)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            if first is None:
                self._drain_and_export([])
                return
            # Gather for up to the schedule delay (or a full batch), so spans
            # go out in few, large exports rather than one call per span.
            batch = [first]
            deadline = time.monotonic() + self._delay
            while len(batch) < self._max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    self._drain_and_export(batch)
                    return
                batch.append(item)
            self._export(batch)

    def _drain_and_export(self, batch: list[ReadableSpan]) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                batch.append(item)
        if batch:
            self._export(batch)

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            result = self.exporter.export(batch)
        except Exception:
            log.exception("span export failed")
            result = SpanExportResult.FAILURE
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.stats.exported += len(batch)
            else:
                self.stats.failed += len(batch)
            self._flushed.notify_all()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every span ended so far was handed to the exporter."""
        with self._lock:
            target = self.stats.ended - self.stats.dropped
            return self._flushed.wait_for(
                lambda: self.stats.exported + self.stats.failed >= target,
                timeout_millis / 1000,
            )

    def shutdown(self) -> None:
        self.shutdown_within(30.0)

    def shutdown_within(self, timeout: float) -> None:
        """Export what is queued, waiting at most ``timeout`` s."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._worker.join(timeout)
        self.exporter.shutdown()


class RedactingSpanExporter(SpanExporter):
    """Hands spans to ``exporter`` with every secret value the process
    knows (:mod:`conveyor.daemon.secrets.redaction`) masked out of their
    names, attributes, events and status: whatever a stage kind or a
    reason put there, no secret leaves the daemon in a span."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        masker = REDACTOR.masker
        if masker:
            spans = [_redacted_span(span, masker) for span in spans]
        return self.exporter.export(spans)

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def _redacted_value(value: Any, masker: Masker) -> Any:
    if isinstance(value, str):
        return masker.mask_text(value)
    if isinstance(value, tuple | list):
        return type(value)(_redacted_value(item, masker) for item in value)
    return value


def _redacted_attributes(attributes: Mapping[str, Any] | None, masker: Masker) -> dict[str, Any]:
    return {key: _redacted_value(value, masker) for key, value in (attributes or {}).items()}


def _redacted_span(span: ReadableSpan, masker: Masker) -> ReadableSpan:
    status = span.status
    if status.description:
        status = Status(status.status_code, masker.mask_text(status.description))
    return ReadableSpan(
        name=masker.mask_text(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_redacted_attributes(span.attributes, masker),
        events=[
            Event(
                masker.mask_text(event.name),
                _redacted_attributes(event.attributes, masker),
                event.timestamp,
            )
            for event in span.events
        ],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
