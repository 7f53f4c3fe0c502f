"""Tracer and meter providers from the standard ``OTEL_*`` variables and the
daemon's configuration.

Exporters: ``otlp`` (OTLP over gRPC), ``console`` (for debugging) or
``none``. ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` choose them;
when unset, the daemon's ``telemetry_exporter`` setting does, and when that
is unset too, ``otlp`` if an OTLP endpoint is configured, else ``none`` — no
export by default. When nothing exports traces, spans are not recorded (see
:mod:`~conveyor.daemon.telemetry.unexported`): they still have ids, their
context is still handed to stages, and they are still counted as ended.

The resource names the service (``service.name=conveyor``, its version) and
the daemon as the CICD worker (``cicd.worker.id``, ``cicd.worker.name``,
``cicd.worker.url.full``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from conveyor.client.address import conveyor_home
from conveyor.daemon.telemetry import attributes as a
from conveyor.daemon.telemetry.deployments import DeploymentTracing
from conveyor.daemon.telemetry.dora import DoraGauges
from conveyor.daemon.telemetry.export import (
    BoundedBatchSpanProcessor,
    ExportStats,
    RedactingSpanExporter,
    SpanCounter,
)
from conveyor.daemon.telemetry.metrics import Instruments
from conveyor.daemon.telemetry.tracing import RunTracing
from conveyor.daemon.telemetry.unexported import CountingTracer, EndedSpans
from conveyor.daemon.telemetry.urls import RunUrls

log = logging.getLogger(__name__)

SERVICE_NAME = "conveyor"
EXPORTERS = ("otlp", "console", "none")
#: Seconds of history the DORA gauges cover unless told (30 days).
DEFAULT_DORA_WINDOW = 30 * 86400.0


class TelemetryConfigError(Exception):
    pass


def _version() -> str:
    try:
        return metadata.version("conveyor-daemon")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _choice(env: Mapping[str, str], variable: str, configured: str, endpoint: str) -> list[str]:
    raw = env.get(variable) or configured or ("otlp" if endpoint else "none")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    for name in names:
        if name not in EXPORTERS:
            raise TelemetryConfigError(
                f"{variable}={raw!r}: unknown exporter {name!r}; expected one of {EXPORTERS}"
            )
    return [n for n in names if n != "none"]


def _check_protocol(env: Mapping[str, str], signal: str) -> None:
    for variable in (f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(variable)
        if protocol:
            if protocol != "grpc":
                raise TelemetryConfigError(
                    f"{variable}={protocol!r}: Conveyor exports OTLP over gRPC only"
                )
            return


class Telemetry:
    """The daemon's tracer and meter, plus export statistics.

    ``record_spans`` False: spans are :class:`CountingTracer` spans (ids,
    no recording), for when nothing exports them."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        processors: list[BoundedBatchSpanProcessor],
        exporters: list[str],
        *,
        urls: RunUrls | None = None,
        dora_window: float = DEFAULT_DORA_WINDOW,
        record_spans: bool = True,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.processors = processors
        self.exporters = exporters
        self._ended: SpanCounter | EndedSpans
        tracer: trace.Tracer
        if record_spans:
            self._ended = SpanCounter()
            tracer_provider.add_span_processor(self._ended)
            tracer = tracer_provider.get_tracer("conveyor", _version())
        else:
            self._ended = EndedSpans()
            tracer = CountingTracer(self._ended)
        self.instruments = Instruments(meter_provider.get_meter("conveyor", _version()))
        self.runs = RunTracing(tracer, self.instruments, urls)
        self.deployments = DeploymentTracing(
            tracer, meter_provider.get_meter("conveyor", _version())
        )
        self.dora = DoraGauges(meter_provider.get_meter("conveyor", _version()), window=dora_window)

    @property
    def stats(self) -> ExportStats:
        """Spans ended since start-up (exported or not), and per exporter
        summed: exported, failed to export, dropped from a full queue."""
        total = ExportStats(ended=self._ended.ended)
        for processor in self.processors:
            total.exported += processor.stats.exported
            total.failed += processor.stats.failed
            total.dropped += processor.stats.dropped
        return total

    def shutdown(self, timeout: float) -> None:
        """Flush and stop exporting, waiting at most about ``timeout`` s.

        Blocking: call it from a worker thread.
        """
        for processor in self.processors:
            processor.shutdown_within(timeout)
        stopper = threading.Thread(
            target=self.meter_provider.shutdown,
            kwargs={"timeout_millis": timeout * 1000},
            daemon=True,
        )
        stopper.start()
        stopper.join(timeout)


def worker_attributes(home: Path, urls: RunUrls, host: str | None = None) -> dict[str, str]:
    """``cicd.worker.*`` of the daemon with this home on this host: the
    daemon is the worker that runs the stages."""
    name = host if host is not None else socket.gethostname()
    return {a.WORKER_ID: f"{name}:{home}", a.WORKER_NAME: name, a.WORKER_URL: urls.daemon}


def configure(
    *,
    exporter: str = "",
    endpoint: str = "",
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    dora_window: float = DEFAULT_DORA_WINDOW,
    web_url: str = "",
) -> Telemetry:
    """Build the providers. ``exporter``/``endpoint`` come from the daemon's
    configuration; ``OTEL_*`` variables take precedence. ``home`` is the
    daemon's home folder (default: ``CONVEYOR_HOME``): it names the worker
    and goes into run and stage URLs, unless the web dashboard serves at
    ``web_url`` (``http://127.0.0.1:7480``): run and stage URLs are then its
    pages."""
    env = os.environ if env is None else env
    home = (home if home is not None else conveyor_home()).absolute()
    host = socket.gethostname()
    urls = RunUrls(web_url) if web_url else RunUrls.of_daemon(home, host)
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        exporter, endpoint = "none", ""
        env = {k: v for k, v in env.items() if not k.endswith("_EXPORTER")}
    otlp_endpoint = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or endpoint
    )
    traces = _choice(env, "OTEL_TRACES_EXPORTER", exporter, otlp_endpoint)
    metrics = _choice(env, "OTEL_METRICS_EXPORTER", exporter, otlp_endpoint)
    resource = Resource.create(
        {
            "service.name": SERVICE_NAME,
            "service.version": _version(),
            **worker_attributes(home, urls, host),
        }
    )

    processors: list[BoundedBatchSpanProcessor] = []
    # shut down explicitly by the daemon (Telemetry.shutdown), not at exit
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for name in traces:
        span_exporter: SpanExporter
        if name == "otlp":
            _check_protocol(env, "TRACES")
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter(endpoint=otlp_endpoint or None)
        else:
            span_exporter = ConsoleSpanExporter()
        processor = BoundedBatchSpanProcessor(
            RedactingSpanExporter(span_exporter),
            max_queue_size=int(env.get("OTEL_BSP_MAX_QUEUE_SIZE", "2048")),
            max_batch_size=int(env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")),
            schedule_delay=int(env.get("OTEL_BSP_SCHEDULE_DELAY", "500")) / 1000,
        )
        tracer_provider.add_span_processor(processor)
        processors.append(processor)

    readers: list[MetricReader] = []
    for name in metrics:
        if name == "otlp":
            _check_protocol(env, "METRICS")
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            metric_endpoint = (
                env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or endpoint
                or None
            )
            readers.append(
                PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=metric_endpoint))
            )
        else:
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, shutdown_on_exit=False
    )
    if traces or metrics:
        log.info(
            "telemetry: traces -> %s, metrics -> %s (%s)",
            ",".join(traces) or "none",
            ",".join(metrics) or "none",
            otlp_endpoint or "-",
        )
    return Telemetry(
        tracer_provider,
        meter_provider,
        processors,
        traces,
        urls=urls,
        dora_window=dora_window,
        record_spans=bool(traces),
    )
