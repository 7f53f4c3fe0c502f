"""Log streaming: a stage writes 200 MB to stdout while a StreamLogs(follow=True)
client, started as soon as the stage is RUNNING, reads it live (5 repetitions,
each followed by the same run that nobody reads; the target is on the slowest).

Reports the client's MB/s (first to last chunk, and from submit), the stage's
own rate into the log (daemon records) with and without a follower, a
non-follow read of the finished log, the daemon's RSS growth (peak during -
idle before) and CPU, and checks the client got every byte once: contiguous
offsets, as many bytes as the stage's recorded log size, and exactly 200 MB of
``x`` after the command banner the ``run`` stage kind prints. Baselines: the
same command piped to /dev/null, and to a file, by a shell.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    MB,
    BenchResult,
    CpuMeter,
    Figure,
    RssSampler,
    get_run,
    idle_rss,
    pipeline_repo,
    running_daemon,
    scratch_dir,
    seconds,
    shell_seconds,
    submit,
    wait_finished,
    wait_stage_status,
)
from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess

NAME = "logstream"
TARGET_MB_S = 100.0
#: The slowest of the followed runs.
TARGET_SLOWEST_MB_S = 200.0
TARGET_RSS_GROWTH_MB = 64.0
STAGE = "big"


def command(size: int) -> str:
    return f"head -c {size} /dev/zero | tr '\\0' x"


@dataclass
class Received:
    """What a StreamLogs client got, checked as it arrives."""

    total: int = 0
    chunks: int = 0
    max_chunk: int = 0
    gaps: int = 0
    #: Bytes up to and including the first newline: the command banner.
    banner: int | None = None
    payload_x: int = 0
    first: float = 0.0
    last: float = 0.0

    def add(self, offset: int, data: bytes) -> None:
        now = time.perf_counter()
        if not self.chunks:
            self.first = now
        self.last = now
        if offset != self.total:
            self.gaps += 1
        self.total = offset + len(data)
        self.chunks += 1
        self.max_chunk = max(self.max_chunk, len(data))
        start = 0
        if self.banner is None:
            newline = data.find(b"\n")
            if newline < 0:
                return
            self.banner = offset + newline + 1
            start = newline + 1
        self.payload_x += data.count(b"x", start)

    @property
    def payload(self) -> int:
        return self.total - (self.banner or 0)


def _read(daemon: DaemonProcess, run_id: str, follow: bool) -> Received:
    received = Received()
    call = daemon.stub.StreamLogs(
        runs_pb2.StreamLogsRequest(run_id=run_id, stage=STAGE, follow=follow), timeout=600
    )
    for chunk in call:
        received.add(chunk.offset, chunk.data)
    return received


def followed_run(daemon: DaemonProcess, repo: Path, size: int) -> dict[str, Any]:
    """One run read live from RUNNING on; rates in MB/s, times in seconds."""
    assert daemon.proc is not None
    with CpuMeter(daemon.proc.pid) as cpu:
        t_submit = time.perf_counter()
        run_id = submit(daemon, repo).id
        t_running = wait_stage_status(daemon, run_id, STAGE, runs_pb2.STAGE_STATUS_RUNNING)
        live = _read(daemon, run_id, follow=True)
        wait_finished(daemon, run_id)
    stage = get_run(daemon, run_id).stages[0]
    stage_seconds = seconds(stage.finished_at) - seconds(stage.started_at)
    span = live.last - live.first
    return {
        "run_id": run_id,
        "client_mb_s": live.payload / MB / span if span > 0 else 0.0,
        "client_mb_s_from_submit": live.payload / MB / (live.last - t_submit),
        "stage_mb_s": size / MB / stage_seconds if stage_seconds > 0 else 0.0,
        "submit_to_running_s": t_running - t_submit,
        "running_to_first_chunk_s": live.first - t_running,
        "first_to_last_chunk_s": span,
        "stage_seconds": stage_seconds,
        "stage_log_size": stage.log_size,
        "bytes": live.total,
        "banner_bytes": live.banner,
        "payload_bytes": live.payload,
        "payload_x_bytes": live.payload_x,
        "offset_gaps": live.gaps,
        "byte_errors": abs(live.payload - size)
        + abs(live.payload_x - size)
        + abs(live.total - stage.log_size)
        + live.gaps,
        "chunks": live.chunks,
        "mean_chunk_kb": live.total / live.chunks / 1024 if live.chunks else 0.0,
        "max_chunk_kb": live.max_chunk / 1024,
        **cpu.as_dict(),
    }


def _alone(daemon: DaemonProcess, repo: Path, size: int) -> dict[str, Any]:
    """One run nobody reads: the rate at which the stage's output reaches the log."""
    assert daemon.proc is not None
    with CpuMeter(daemon.proc.pid) as cpu:
        run_id = submit(daemon, repo).id
        wait_finished(daemon, run_id)
    stage = get_run(daemon, run_id).stages[0]
    stage_seconds = seconds(stage.finished_at) - seconds(stage.started_at)
    return {
        "run_id": run_id,
        "stage_mb_s": size / MB / stage_seconds if stage_seconds > 0 else 0.0,
        "stage_seconds": stage_seconds,
        "stage_log_size": stage.log_size,
        **cpu.as_dict(),
    }


def run(quick: bool) -> BenchResult:
    size = (50 if quick else 200) * MB
    reps = 2 if quick else 5
    cmd = command(size)
    followed: list[dict[str, Any]] = []
    alone: list[dict[str, Any]] = []
    with scratch_dir() as root:
        repo = pipeline_repo(root / "repo", "logstream", {STAGE: {"run": cmd}})
        warm = pipeline_repo(root / "warm", "warm", {STAGE: {"run": "echo warm"}})
        sink = root / "sink.log"
        baseline_runs: list[float] = []
        file_runs: list[float] = []
        for _ in range(3):
            baseline_runs.append(shell_seconds(f"{cmd} > /dev/null"))
            file_runs.append(shell_seconds(f"{cmd} > {sink}; rm {sink}"))
        with running_daemon(root / "home") as daemon:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            warm_run = submit(daemon, warm)
            wait_finished(daemon, warm_run.id)
            _read(daemon, warm_run.id, follow=False)
            idle = idle_rss(pid, 1.0)
            with RssSampler(pid) as sampler:
                for _ in range(reps):
                    followed.append(followed_run(daemon, repo, size))
                    alone.append(_alone(daemon, repo, size))
            t0 = time.perf_counter()
            again = _read(daemon, followed[0]["run_id"], follow=False)
            t_again = time.perf_counter() - t0
            idle_after = idle_rss(pid, 0.5)

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    baseline = size / MB / statistics.median(baseline_runs)
    file_baseline = size / MB / statistics.median(file_runs)
    follow_rate = med(followed, "client_mb_s")
    growth = (sampler.peak - idle) / MB
    byte_errors = sum(r["byte_errors"] for r in followed)
    read_rate = again.payload / MB / t_again if t_again > 0 else 0.0
    dev_null = "head|tr >/dev/null"
    figures = [
        Figure(
            f"follow: client MB/s, first to last chunk (median of {reps})",
            follow_rate,
            "MB/s",
            TARGET_MB_S,
            higher_is_better=True,
            baseline=baseline,
            baseline_name=dev_null,
        ),
        Figure(
            f"follow: client MB/s, slowest of {reps} runs",
            min(r["client_mb_s"] for r in followed),
            "MB/s",
            TARGET_SLOWEST_MB_S,
            higher_is_better=True,
            baseline=baseline,
            baseline_name=dev_null,
        ),
        Figure(
            "follow: client MB/s, from submit",
            med(followed, "client_mb_s_from_submit"),
            "MB/s",
            baseline=baseline,
            baseline_name=dev_null,
        ),
        Figure("daemon RSS growth (peak - idle)", growth, "MB", TARGET_RSS_GROWTH_MB),
        Figure(
            f"follow: bytes missing/extra vs {size // MB} MB, or offset gaps",
            byte_errors,
            "bytes",
            0,
        ),
        Figure(
            "stage output into the log, followed (records)",
            med(followed, "stage_mb_s"),
            "MB/s",
            baseline=file_baseline,
            baseline_name="head|tr >file",
        ),
        Figure(
            "stage output into the log, nobody following (records)",
            med(alone, "stage_mb_s"),
            "MB/s",
            baseline=file_baseline,
            baseline_name="head|tr >file",
        ),
        Figure(
            "non-follow read of the finished log",
            read_rate,
            "MB/s",
            baseline=baseline,
            baseline_name=dev_null,
        ),
        Figure("baseline: head|tr > /dev/null", baseline, "MB/s"),
        Figure("baseline: head|tr > file (same file system)", file_baseline, "MB/s"),
        Figure("follow: mean chunk size", med(followed, "mean_chunk_kb"), "KB"),
        Figure(
            "follow: daemon CPU per run",
            med(followed, "daemon_user_cpu_s") + med(followed, "daemon_system_cpu_s"),
            "s",
        ),
        Figure("follow: client CPU per run", med(followed, "client_cpu_s"), "s"),
        Figure(
            "nobody following: daemon CPU per run",
            med(alone, "daemon_user_cpu_s") + med(alone, "daemon_system_cpu_s"),
            "s",
        ),
        Figure("submit to stage RUNNING seen", med(followed, "submit_to_running_s") * 1000, "ms"),
        Figure("idle RSS before", idle / MB, "MB"),
        Figure("peak RSS", sampler.peak / MB, "MB"),
        Figure("idle RSS after", idle_after / MB, "MB"),
    ]
    summary: dict[str, Any] = {
        "received_exactly": byte_errors == 0,
        "follow_mb_s_median": follow_rate,
        "follow_mb_s_all": [r["client_mb_s"] for r in followed],
        "non_follow": {
            "bytes": again.total,
            "payload_bytes": again.payload,
            "seconds": t_again,
            "offset_gaps": again.gaps,
            "chunks": again.chunks,
            "mb_s": read_rate,
        },
        "rss_mb": {
            "idle_before": idle / MB,
            "peak": sampler.peak / MB,
            "growth": growth,
            "idle_after": idle_after / MB,
        },
        "baseline_mb_s": baseline,
        "baseline_file_mb_s": file_baseline,
        "targets": {"mb_s": TARGET_MB_S, "rss_growth_mb": TARGET_RSS_GROWTH_MB},
        "targets_met": {
            "mb_s": follow_rate >= TARGET_MB_S,
            "rss_growth": growth <= TARGET_RSS_GROWTH_MB,
            "exact": byte_errors == 0,
        },
    }
    return BenchResult(
        name=NAME,
        figures=figures,
        parameters={
            "bytes": size,
            "repetitions": reps,
            "command": cmd,
            "rss_interval_seconds": 0.02,
            "order": "followed run, then a run nobody reads, alternating",
        },
        samples={
            "followed_runs": followed,
            "unread_runs": alone,
            "baseline_dev_null_seconds": baseline_runs,
            "baseline_file_seconds": file_runs,
            "rss_series_mb": sampler.series_mb(),
        },
        summary=summary,
    )
