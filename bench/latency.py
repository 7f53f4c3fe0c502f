"""Submit-to-first-stage-start latency of a 1-stage pipeline, submitted sequentially,
and the fixed cost of a run.

The stage runs ``date +%s%N > DIR/$CONVEYOR_RUN_ID``: the wall clock when the
stage's process started, compared with the client's clock just before
SubmitRun. Each run finishes before the next is submitted, so this measures
latency, not queueing. Baseline, interleaved: Python spawning ``sh -c 'date +%s%N'``.

The fixed cost of a run is what the daemon's own clock says the run took
(``created_at`` to ``finished_at``) minus its stage's time (stage
``started_at`` to ``finished_at``). The breakdown follows one run from the
client's trigger to its first process: trigger -> stored (the run's first
event, written in the transaction that stores it) -> started (``started_at``:
taken from the queue, version read) -> checked out (the stage's
``started_at``) -> first spawn (the process's own clock); then the stage's end
to the run's end (close-out).
"""

from __future__ import annotations

import math
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
)
from conveyor.v1 import runs_pb2
from tests.support.daemon import FINISHED, DaemonProcess

NAME = "latency"
TARGET_P50_MS = 4.0
TARGET_P99_MS = 10.0
TARGET_FIXED_MS = 5.0
WARMUP = 3


def _watch(daemon: DaemonProcess, run_id: str) -> float:
    """Follow the run to its end; returns the time (daemon clock) of its
    first event, the one stored with it."""
    first = math.nan
    for event in daemon.stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id), timeout=120):
        if event.seq == 1:
            first = seconds(event.time)
        if event.kind == runs_pb2.RUN_EVENT_KIND_RUN_STATUS and event.run_status in FINISHED:
            return first
    raise RuntimeError(f"run {run_id}: event stream ended before the run finished")


def spawn_baseline() -> float:
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
            "to_stored",
            "stored_to_started",
            "close_out",
            "fixed_cost",
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
                stored = _watch(daemon, run.id)
                baseline = spawn_baseline()
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
                stage_finished = seconds(record.stages[0].finished_at)
                run_finished = seconds(record.finished_at)
                samples["latency"].append((started_ns - t0) / 1e9)
                samples["submit_rpc"].append((t_submitted - t0) / 1e9)
                samples["to_created"].append(created - t0 / 1e9)
                samples["queued"].append(run_started - created)
                samples["to_stage_start"].append(stage_started - run_started)
                samples["stage_to_process"].append(started_ns / 1e9 - stage_started)
                samples["to_stored"].append(stored - t0 / 1e9)
                samples["stored_to_started"].append(run_started - stored)
                samples["close_out"].append(run_finished - stage_finished)
                samples["fixed_cost"].append(
                    (run_finished - created) - (stage_finished - stage_started)
                )
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
        Figure(
            "submit to stage process start, p99",
            lat["p99"],
            "ms",
            TARGET_P99_MS,
            baseline=base["p99"],
            baseline_name="spawn sh -c date",
        ),
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
        Figure(
            "fixed cost per run (created_at to finished_at, minus the stage), p50",
            stats["fixed_cost"]["p50"],
            "ms",
            TARGET_FIXED_MS,
            note="daemon clock",
        ),
        Figure("fixed cost per run, p99", stats["fixed_cost"]["p99"], "ms"),
        Figure("breakdown: trigger (client) to stored (first event)", median_ms("to_stored"), "ms"),
        Figure(
            "breakdown: stored to started (queue, version)", median_ms("stored_to_started"), "ms"
        ),
        Figure("breakdown: started to stage started (checkout)", median_ms("to_stage_start"), "ms"),
        Figure("breakdown: stage started to first spawn", median_ms("stage_to_process"), "ms"),
        Figure("breakdown: stage end to run end (close-out)", median_ms("close_out"), "ms"),
    ]
    summary: dict[str, Any] = {
        "stats_ms": stats,
        "failures": failures,
        "target_p50_ms": TARGET_P50_MS,
        "target_p99_ms": TARGET_P99_MS,
        "target_fixed_ms": TARGET_FIXED_MS,
        "target_met": lat.get("p50", float("inf")) <= TARGET_P50_MS,
    }
    return BenchResult(
        name=NAME,
        figures=figures,
        parameters={"runs": count, "warmup_runs": WARMUP, "sequential": True},
        samples={"units": "ms", **{key: ms(values) for key, values in samples.items()}},
        summary=summary,
    )
