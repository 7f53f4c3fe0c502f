"""Submit-to-first-stage-start latency of a 1-stage pipeline, submitted sequentially.

The stage runs ``date +%s%N > DIR/$CONVEYOR_RUN_ID``: the wall clock when the
stage's process started, compared with the client's clock just before
SubmitRun. Each run finishes before the next is submitted, so this measures
latency, not queueing. Baseline, interleaved: Python spawning ``sh -c 'date +%s%N'``.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Any

from bench.common import (
    BenchResult,
    Figure,
    describe,
    get_run,
    ms,
    pipeline_repo,
    running_daemon,
    scratch_dir,
    seconds,
    submit,
    wait_finished,
)
from conveyor.v1 import runs_pb2

NAME = "latency"
TARGET_P50_MS = 20.0
WARMUP = 3


def _spawn_baseline() -> float:
    """Seconds from just before spawning ``sh -c 'date +%s%N'`` to the time it prints."""
    t0 = time.time_ns()
    out = subprocess.run(["sh", "-c", "date +%s%N"], capture_output=True, check=True).stdout
    return (int(out) - t0) / 1e9


def run(quick: bool) -> BenchResult:
    count = 50 if quick else 200
    samples: dict[str, list[float]] = {
        key: []
        for key in (
            "latency",
            "submit_rpc",
            "to_created",
            "queued",
            "to_stage_start",
            "stage_to_process",
            "baseline",
        )
    }
    failures = 0
    with scratch_dir() as root:
        marks = root / "marks"
        marks.mkdir()
        command = f'date +%s%N > {marks}/"$CONVEYOR_RUN_ID"'
        repo = pipeline_repo(root / "repo", "latency", {"t": {"run": command}})
        with running_daemon(root / "home") as daemon:
            for i in range(WARMUP + count):
                t0 = time.time_ns()
                run = submit(daemon, repo)
                t_submitted = time.time_ns()
                wait_finished(daemon, run.id)
                baseline = _spawn_baseline()
                if i < WARMUP:
                    continue
                record = get_run(daemon, run.id)
                if record.status != runs_pb2.RUN_STATUS_SUCCEEDED:
                    failures += 1
                    continue
                started_ns = int((marks / run.id).read_text())
                created = seconds(record.created_at)
                run_started = seconds(record.started_at)
                stage_started = seconds(record.stages[0].started_at)
                samples["latency"].append((started_ns - t0) / 1e9)
                samples["submit_rpc"].append((t_submitted - t0) / 1e9)
                samples["to_created"].append(created - t0 / 1e9)
                samples["queued"].append(run_started - created)
                samples["to_stage_start"].append(stage_started - run_started)
                samples["stage_to_process"].append(started_ns / 1e9 - stage_started)
                samples["baseline"].append(baseline)

    stats = {key: describe(values, scale=1000) for key, values in samples.items()}
    lat, base = stats["latency"], stats["baseline"]

    def median_ms(key: str) -> float:
        return statistics.median(samples[key]) * 1000 if samples[key] else float("nan")

    figures = [
        Figure(
            "submit to stage process start, p50",
            lat["p50"],
            "ms",
            TARGET_P50_MS,
            baseline=base["p50"],
            baseline_name="spawn sh -c date",
        ),
        Figure("submit to stage process start, p90", lat["p90"], "ms", headline=True),
        Figure("submit to stage process start, p99", lat["p99"], "ms", headline=True),
        Figure("submit to stage process start, max", lat["max"], "ms", headline=True),
        Figure("failed runs", failures, "runs", 0),
        Figure("baseline: python spawn `sh -c 'date +%s%N'`, p50", base["p50"], "ms"),
        Figure("baseline: python spawn `sh -c 'date +%s%N'`, p99", base["p99"], "ms"),
        Figure("  SubmitRun RPC (client)", median_ms("submit_rpc"), "ms"),
        Figure("  client t0 to run created_at", median_ms("to_created"), "ms"),
        Figure("  created_at to run started_at (queue)", median_ms("queued"), "ms"),
        Figure(
            "  run started_at to stage started_at (checkout)", median_ms("to_stage_start"), "ms"
        ),
        Figure("  stage started_at to process clock (spawn)", median_ms("stage_to_process"), "ms"),
    ]
    summary: dict[str, Any] = {
        "stats_ms": stats,
        "failures": failures,
        "target_p50_ms": TARGET_P50_MS,
        "target_met": lat.get("p50", float("inf")) <= TARGET_P50_MS,
    }
    return BenchResult(
        name=NAME,
        figures=figures,
        parameters={"runs": count, "warmup_runs": WARMUP, "sequential": True},
        samples={"units": "ms", **{key: ms(values) for key, values in samples.items()}},
        summary=summary,
    )
