"""OpenTelemetry: traces and metrics of runs, configured from ``OTEL_*``.

One trace per run: a SERVER span for the run and an INTERNAL span per stage,
named and attributed after the OpenTelemetry CICD semantic conventions. The
run's trace context is stored with the run, so whatever the run produces can
link back to it later.
"""

from conveyor.daemon.telemetry.setup import Telemetry, TelemetryConfigError, configure

__all__ = ["Telemetry", "TelemetryConfigError", "configure"]
