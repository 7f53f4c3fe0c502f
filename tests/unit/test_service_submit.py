"""Submitting runs in-process: a run that cannot be stored leaves no span
open and no run counted as pending (issue 7, item 9)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from conveyor.daemon.config import Config
from conveyor.daemon.plugins import Plugins
from conveyor.daemon.service import RunService, SubmitRequest
from conveyor.daemon.store import Database
from conveyor.daemon.telemetry import Telemetry
from tests.support.inprocess import serving
from tests.support.repos import make_repo

PIPELINE = "name: svc\nstages:\n  s:\n    run: 'true'\n"


@dataclass
class Harness:
    service: RunService
    db: Database
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    repo: Path

    def pending(self) -> int:
        """The ``cicd.pipeline.run.active`` gauge for pending runs."""
        data = self.metrics.get_metrics_data()
        total = 0
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != "cicd.pipeline.run.active":
                        continue
                    for point in metric.data.data_points:
                        attributes = point.attributes or {}
                        if attributes.get("cicd.pipeline.run.state") == "pending":
                            assert isinstance(point, NumberDataPoint)
                            total += int(point.value)
        return total


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[metrics]), [], [])
    plugins = Plugins()
    await trio.to_thread.run_sync(plugins.load_entry_points)
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": PIPELINE}).path
    config = Config(home=tmp_path / "home")
    async with serving(config, plugins, telemetry=telemetry, base_env={}) as wired:
        yield Harness(wired.service, wired.db, spans, metrics, repo)


async def test_a_run_that_cannot_be_stored_ends_its_span_and_is_never_pending(
    harness: Harness,
) -> None:
    # A real failing insert: the database refuses every new run.
    harness.db.write_sync(
        lambda conn: conn.execute(
            "CREATE TRIGGER refuse_runs BEFORE INSERT ON runs"
            " BEGIN SELECT RAISE(ABORT, 'the disk says no'); END"
        )
    )
    with pytest.raises(sqlite3.IntegrityError, match="the disk says no"):
        await harness.service.submit(SubmitRequest(repository=str(harness.repo), ref="main"))
    (span,) = harness.spans.get_finished_spans()
    assert span.name == "RUN svc"
    assert span.status.status_code is StatusCode.ERROR
    assert "the run was not stored" in (span.status.description or "")
    assert harness.pending() == 0
