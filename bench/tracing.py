"""Per-stage cost of tracing export: the 50-stage chain with OTLP export on
(to a real OTLP/gRPC receiver on 127.0.0.1) versus off, alternating in one run.

Overhead per stage = median over paired repetitions of
(run time with export - run time without) / 50, from the daemons' own
records (run finished_at - started_at) and from the client (submit until the
daemon is idle). Spans are recorded either way (their context reaches the
stages); what export adds is the processor, the export thread and the wire.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchResult,
    Figure,
    get_run,
    pipeline_repo,
    scratch_dir,
    seconds,
    submit,
    wait_idle,
)
from bench.overhead import STAGES, chain
from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess
from tests.support.otlp import OtlpReceiver

NAME = "tracing"
TARGET_MS = 0.5


def _one_run(daemon: DaemonProcess, repo: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    run = submit(daemon, repo)
    t_end = wait_idle(daemon)
    record = get_run(daemon, run.id)
    if record.status != runs_pb2.RUN_STATUS_SUCCEEDED:
        raise RuntimeError(f"chain run {run.id} ended {record.status}: {record.reason}")
    return {
        "wall": t_end - t0,
        "daemon_run": seconds(record.finished_at) - seconds(record.started_at),
    }


def run(quick: bool) -> BenchResult:
    reps = 5 if quick else 10
    off: list[dict[str, float]] = []
    on: list[dict[str, float]] = []
    receiver = OtlpReceiver().start()
    try:
        with scratch_dir() as root:
            repo = pipeline_repo(root / "repo", "chain", chain(STAGES))
            plain = DaemonProcess(root / "off").start()
            traced = DaemonProcess(
                root / "on",
                env={
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_METRICS_EXPORTER": "none",
                },
            ).start()
            try:
                _one_run(plain, repo)  # warm-up
                _one_run(traced, repo)
                for rep in range(reps):
                    pair = [(plain, off), (traced, on)]
                    for daemon, results in pair if rep % 2 == 0 else reversed(pair):
                        results.append(_one_run(daemon, repo))
                deadline = time.monotonic() + 10
                expected = (reps + 1) * (STAGES + 1)
                while len(receiver.spans()) < expected and time.monotonic() < deadline:
                    time.sleep(0.05)
                received = len(receiver.spans())
            finally:
                plain.stop()
                traced.stop()
    finally:
        receiver.stop()

    def per_stage_ms(key: str) -> float:
        return statistics.median(
            (b[key] - a[key]) / STAGES * 1000 for a, b in zip(off, on, strict=True)
        )

    def med_ms(results: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in results) * 1000

    samples: dict[str, Any] = {"export_off": off, "export_on": on}
    figures = [
        Figure(
            "tracing export overhead per stage (daemon records)",
            per_stage_ms("daemon_run"),
            "ms",
            TARGET_MS,
            note="median of paired (on - off) / 50",
        ),
        Figure(
            "tracing export overhead per stage (client, submit to idle)",
            per_stage_ms("wall"),
            "ms",
            headline=True,
        ),
        Figure(
            "run, 50 stages, export on (records)",
            med_ms(on, "daemon_run"),
            "ms",
            baseline=med_ms(off, "daemon_run"),
            baseline_name="export off",
        ),
        Figure("run, 50 stages, export off (records)", med_ms(off, "daemon_run"), "ms"),
        Figure(
            "spans received by the OTLP receiver",
            float(received),
            "spans",
            note=f"expected {expected}: {reps + 1} runs x ({STAGES} stages + 1 run span)",
        ),
    ]
    return BenchResult(
        NAME,
        figures,
        parameters={"stages": STAGES, "repetitions": reps},
        samples=samples,
    )
