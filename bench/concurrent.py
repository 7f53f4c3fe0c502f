"""Many runs at once: 200 runs of a 5-stage diamond (a -> {b, c} -> d -> e) of
``true`` stages, submitted as fast as possible (all SubmitRun calls in flight
together), with ``--max-concurrent-runs 200`` and with the default (16).

Reports runs per second, failures, and the daemon's RSS: idle before, peak
during (sampled every 20 ms in a thread), idle after (1 s after the burst,
the target's figure) and once idle worker threads have exited
(:data:`SETTLE_SECONDS` later), with the daemon's thread count at each.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from bench.common import (
    MB,
    BenchResult,
    CpuMeter,
    Figure,
    RssSampler,
    describe,
    idle_rss,
    ms,
    pipeline_repo,
    rpc_error_text,
    run_status_name,
    running_daemon,
    scratch_dir,
    seconds,
    thread_count,
)
from conveyor.v1 import runs_pb2, server_pb2

NAME = "concurrent"
TARGET_RUNS_S = 150.0
#: Idle RSS after a burst, over the idle RSS before it.
TARGET_RSS_KEPT_MB = 10.0
DIAMOND: dict[str, dict[str, Any]] = {
    "a": {"run": "true"},
    "b": {"run": "true", "needs": ["a"]},
    "c": {"run": "true", "needs": ["a"]},
    "d": {"run": "true", "needs": ["b", "c"]},
    "e": {"run": "true", "needs": ["d"]},
}
#: Give up waiting for a burst after this many seconds (reported as unfinished).
BURST_TIMEOUT = 240.0
#: Seconds after the burst for the settled figures: worker threads idle for
#: 10 s exit (the API's pool and trio's).
SETTLE_SECONDS = 12.0
#: The raised limit tried beside the default (16).
MAX_RUNS = 200


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def _burst(root: Path, repo: Path, count: int, max_runs: int | None) -> dict[str, Any]:
    label = str(max_runs) if max_runs else "default"
    args = ["--max-concurrent-runs", str(max_runs)] if max_runs else []
    with running_daemon(root / f"home-{label}", *args) as daemon:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        stub = daemon.stub
        status = stub.GetServerStatus(server_pb2.GetServerStatusRequest(), timeout=10)
        limit = status.max_concurrent_runs
        idle_before = idle_rss(pid, 1.0)
        threads_before = thread_count(pid)
        request = runs_pb2.SubmitRunRequest(repository=str(repo), ref="main")
        submit_errors: list[str] = []
        with RssSampler(pid) as sampler, CpuMeter(pid) as cpu:
            wall0, t0 = time.time(), time.perf_counter()
            futures = [stub.SubmitRun.future(request, timeout=120) for _ in range(count)]
            for future in futures:
                try:
                    future.result()
                except grpc.RpcError as exc:
                    submit_errors.append(rpc_error_text(exc))
            t_submitted = time.perf_counter()
            finished = False
            while time.perf_counter() - t0 < BURST_TIMEOUT:
                status = stub.GetServerStatus(server_pb2.GetServerStatusRequest(), timeout=10)
                if status.active_runs + status.queued_runs == 0:
                    finished = True
                    break
                time.sleep(0.02)
            t_done = time.perf_counter()
        idle_after = idle_rss(pid, 1.0)
        threads_after = thread_count(pid)
        time.sleep(max(0.0, SETTLE_SECONDS - 1.0))
        idle_settled = idle_rss(pid, 1.0)
        threads_settled = thread_count(pid)
        runs: list[runs_pb2.Run] = []
        token = ""
        while True:
            page = stub.ListRuns(
                runs_pb2.ListRunsRequest(page_size=500, page_token=token), timeout=30
            )
            runs.extend(page.runs)
            token = page.next_page_token
            if not token:
                break
    statuses = Counter(run_status_name(r.status) for r in runs)
    succeeded = statuses.get("SUCCEEDED", 0)
    done = [r for r in runs if r.HasField("finished_at") and r.finished_at.seconds]
    last_finished = max((seconds(r.finished_at) for r in done), default=wall0)
    records_elapsed = last_finished - wall0
    wall = t_done - t0
    durations = [seconds(r.finished_at) - seconds(r.started_at) for r in done]
    latencies = [seconds(r.finished_at) - seconds(r.created_at) for r in done]
    return {
        "max_concurrent_runs": limit,
        "runs": count,
        "finished_in_time": finished,
        "submit_errors": len(submit_errors),
        "submit_error_samples": submit_errors[:5],
        "statuses": dict(statuses),
        "succeeded": succeeded,
        "failures": count - succeeded,
        "submit_seconds": t_submitted - t0,
        "wall_seconds": wall,
        "records_seconds": records_elapsed,
        "runs_per_second": succeeded / wall if wall > 0 else 0.0,
        "runs_per_second_records": succeeded / records_elapsed if records_elapsed > 0 else 0.0,
        "submits_per_second": count / (t_submitted - t0),
        "max_runs_at_once": _max_overlap(
            [(seconds(r.started_at), seconds(r.finished_at)) for r in done]
        ),
        "run_duration_ms": describe(durations, scale=1000),
        "created_to_finished_ms": describe(latencies, scale=1000),
        "cpu": cpu.as_dict(),
        "daemon_cpu_ms_per_run": cpu.daemon / count * 1000,
        "idle_rss_before_mb": idle_before / MB,
        "peak_rss_mb": sampler.peak / MB,
        "rss_growth_mb": (sampler.peak - idle_before) / MB,
        "idle_rss_after_mb": idle_after / MB,
        "idle_rss_settled_mb": idle_settled / MB,
        "threads_before": threads_before,
        "threads_after": threads_after,
        "threads_settled": threads_settled,
        "rss_samples": len(sampler.samples),
        "raw": {
            "run_duration_ms": ms(durations),
            "created_to_finished_ms": ms(latencies),
            "rss_series_mb": sampler.series_mb(),
        },
    }


def run(quick: bool) -> BenchResult:
    count = 50 if quick else 200
    configs: list[int | None] = [MAX_RUNS, None]
    with scratch_dir() as root:
        repo = pipeline_repo(root / "repo", "diamond", DIAMOND)
        bursts = [_burst(root, repo, count, max_runs) for max_runs in configs]
    figures: list[Figure] = []
    for burst in bursts:
        tag = f"[max {burst['max_concurrent_runs']}]"
        figures += [
            Figure(f"{tag} failed or unfinished runs", burst["failures"], "runs", 0),
            Figure(
                f"{tag} runs per second (submit to all done)",
                burst["runs_per_second"],
                "runs/s",
                TARGET_RUNS_S if burst["max_concurrent_runs"] == MAX_RUNS else None,
                higher_is_better=True,
                headline=True,
            ),
            Figure(
                f"{tag} runs per second (daemon records)",
                burst["runs_per_second_records"],
                "runs/s",
                headline=True,
            ),
            Figure(f"{tag} all {count} submitted after", burst["submit_seconds"] * 1000, "ms"),
            Figure(f"{tag} all done after", burst["wall_seconds"] * 1000, "ms"),
            Figure(f"{tag} most runs running at once", burst["max_runs_at_once"], "runs"),
            Figure(f"{tag} run duration p50", burst["run_duration_ms"].get("p50"), "ms"),
            Figure(
                f"{tag} created to finished p50", burst["created_to_finished_ms"].get("p50"), "ms"
            ),
            Figure(f"{tag} daemon CPU per run", burst["daemon_cpu_ms_per_run"], "ms"),
            Figure(f"{tag} idle RSS before", burst["idle_rss_before_mb"], "MB"),
            Figure(
                f"{tag} peak RSS",
                burst["peak_rss_mb"],
                "MB",
                baseline=burst["idle_rss_before_mb"],
                baseline_name="idle",
            ),
            Figure(f"{tag} idle RSS after", burst["idle_rss_after_mb"], "MB"),
            Figure(
                f"{tag} RSS kept after the burst (idle after - idle before)",
                burst["idle_rss_after_mb"] - burst["idle_rss_before_mb"],
                "MB",
                TARGET_RSS_KEPT_MB,
            ),
            Figure(
                f"{tag} RSS kept {SETTLE_SECONDS:g} s after the burst (idle threads gone)",
                burst["idle_rss_settled_mb"] - burst["idle_rss_before_mb"],
                "MB",
            ),
            Figure(
                f"{tag} daemon threads: before, 1 s after, {SETTLE_SECONDS:g} s after",
                burst["threads_settled"],
                "threads",
                baseline=burst["threads_after"],
                baseline_name=f"1 s after; {burst['threads_before']} before",
            ),
        ]
    return BenchResult(
        name=NAME,
        figures=figures,
        parameters={
            "runs": count,
            "stages_per_run": len(DIAMOND),
            "pipeline": "a -> {b, c} -> d -> e, all `true`",
            "max_concurrent_runs": [b["max_concurrent_runs"] for b in bursts],
            "rss_interval_seconds": 0.02,
            "submission": "all SubmitRun calls issued at once (grpc futures, one channel)",
        },
        samples={f"max_{b['max_concurrent_runs']}": b["raw"] for b in bursts},
        summary={
            f"max_{b['max_concurrent_runs']}": {k: v for k, v in b.items() if k != "raw"}
            for b in bursts
        },
    )
