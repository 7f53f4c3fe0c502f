"""The identity of whoever submitted a run: stored with it, scoping its
idempotency key, and on its span as ``enduser.id``."""

from __future__ import annotations

import time
from pathlib import Path

import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.daemon.records import RunRecord, RunStatus, TriggerKind
from conveyor.daemon.store import Database, RunStore
from conveyor.daemon.telemetry.metrics import Instruments
from conveyor.daemon.telemetry.tracing import RunTracing


def _run(run_id: str, submitted_by: str) -> RunRecord:
    return RunRecord(
        id=run_id,
        number=0,
        pipeline="svc",
        repository="/srv/svc.git",
        ref="main",
        commit="a" * 40,
        pipeline_path="conveyor.yaml",
        trigger=TriggerKind.MANUAL,
        status=RunStatus.QUEUED,
        created_at=time.time(),
        spec_json="{}",
        concurrency_group="",
        submitted_by=submitted_by,
    )


def test_the_run_span_names_the_authenticated_submitter() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = RunTracing(provider.get_tracer("t"), Instruments(MeterProvider().get_meter("t")))
    for run_id, who in (("0123456789abcdef0001", "alice"), ("0123456789abcdef0002", "")):
        run = _run(run_id, who)
        tracing.start_run(run)
        run.status, run.finished_at = RunStatus.SUCCEEDED, time.time()
        tracing.end_run(run)
    alice, anonymous = (s.attributes or {} for s in exporter.get_finished_spans())
    assert alice["enduser.id"] == "alice"
    assert "enduser.id" not in anonymous, "no identity (auth off): no attribute"


async def test_submitted_by_is_stored_and_idempotency_keys_are_per_caller(
    tmp_path: Path,
) -> None:
    db = await trio.to_thread.run_sync(Database, tmp_path / "conveyor.db")
    try:
        store = RunStore(db)
        first, created = await store.create_run(_run("0123456789abcdef0001", "alice"), "k1")
        assert created and (await store.get_run(first.id)).submitted_by == "alice"  # type: ignore[union-attr]
        # the same key from another caller is another run, not alice's
        other, created = await store.create_run(_run("0123456789abcdef0002", "bob"), "k1")
        assert created and other.id != first.id
        again, created = await store.create_run(_run("0123456789abcdef0003", "alice"), "k1")
        assert not created and again.id == first.id
        found = await store.run_for_idempotency_key("/srv/svc.git", "k1", "bob")
        assert found is not None and found.id == other.id
        # a key stored before identities existed (no caller) matches anyone
        legacy, _ = await store.create_run(_run("0123456789abcdef0004", ""), "k2")
        found = await store.run_for_idempotency_key("/srv/svc.git", "k2", "carol")
        assert found is not None and found.id == legacy.id
    finally:
        db.close()
