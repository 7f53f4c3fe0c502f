"""Per-stage overhead: a chain of 50 ``true`` stages (each needs the previous)
against the same 50 processes started by a shell script, alternating in one run.

Overhead per stage = (run wall time, submit to final event - script wall time) / 50;
the same from the daemon's records (run finished_at - started_at) leaves out
submit and notification costs. Each repetition runs the chain twice: once
followed with WatchRun (what a client does; the target figures), once waited
for by polling GetServerStatus, which costs the daemon no database reads, to
show what following costs. Baselines: bash running ``/bin/true`` 50 times,
bash running ``sh -c true`` 50 times (the stage's own shell), and Python
starting ``sh -c true`` 50 times (as the daemon does): the target figure is
the overhead over the last, and the daemon's CPU per stage.

Each repetition also runs the peer figure: a chain of 20 ``true`` stages,
submitted through the public API and followed with WatchRun until it ends,
so it stays comparable with figures published for other tools.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchResult,
    CpuMeter,
    Figure,
    get_run,
    ms,
    pipeline_repo,
    running_daemon,
    scratch_dir,
    seconds,
    submit,
    wait_finished,
    wait_idle,
)
from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess

NAME = "overhead"
STAGES = 50
TARGET_MS = 3.0
#: Orchestration overhead per stage over Python spawning ``sh -c true``.
TARGET_VS_PYTHON_MS = 0.5
TARGET_CPU_MS = 0.7
#: Stages of the peer figure's chain.
PEER_STAGES = 20


def chain(n: int) -> dict[str, dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}
    for i in range(1, n + 1):
        stages[f"s{i}"] = {"run": "true", **({"needs": [f"s{i - 1}"]} if i > 1 else {})}
    return stages


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def python_spawns(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(["sh", "-c", "true"], check=True)
    return time.perf_counter() - start


def _one_run(daemon: DaemonProcess, repo: Path, *, watch: bool) -> dict[str, Any]:
    """Submit the chain and wait for it (WatchRun, or polling); timings in seconds."""
    assert daemon.proc is not None
    with CpuMeter(daemon.proc.pid) as cpu:
        wall0, t0 = time.time(), time.perf_counter()
        run = submit(daemon, repo)
        t_submitted = time.perf_counter()
        t_end = wait_finished(daemon, run.id) if watch else wait_idle(daemon)
    record = get_run(daemon, run.id)
    if record.status != runs_pb2.RUN_STATUS_SUCCEEDED:
        raise RuntimeError(f"chain run {run.id} ended {record.status}: {record.reason}")
    stages = sorted(record.stages, key=lambda s: seconds(s.started_at))
    starts = [seconds(s.started_at) for s in stages]
    ends = [seconds(s.finished_at) for s in stages]
    run_started, run_finished = seconds(record.started_at), seconds(record.finished_at)
    return {
        "wall": t_end - t0,
        "submit_rpc": t_submitted - t0,
        "daemon_run": run_finished - run_started,
        "queue": run_started - seconds(record.created_at),
        "checkout": starts[0] - run_started,
        "chain": ends[-1] - starts[0],
        "close_out": run_finished - ends[-1],
        "notify": (wall0 + (t_end - t0)) - run_finished,
        "stage_median": statistics.median(e - s for s, e in zip(starts, ends, strict=True)),
        "gap_median": statistics.median(starts[i] - ends[i - 1] for i in range(1, len(stages))),
        "daemon_cpu": cpu.daemon,
        "daemon_user_cpu": cpu.daemon_user,
        "daemon_system_cpu": cpu.daemon_system,
        "stage_processes_cpu": cpu.children,
    }


def run(quick: bool) -> BenchResult:
    reps = 5 if quick else 10
    watched: list[dict[str, Any]] = []
    polled: list[dict[str, Any]] = []
    bash_true: list[float] = []
    bash_sh: list[float] = []
    py_sh: list[float] = []
    peer: list[float] = []
    with scratch_dir() as root:
        repo = pipeline_repo(root / "repo", "chain", chain(STAGES))
        peer_repo = pipeline_repo(root / "peer", "chain20", chain(PEER_STAGES))
        true_script = root / "true.sh"
        true_script.write_text("#!/bin/bash\n" + "/bin/true\n" * STAGES)
        sh_script = root / "sh.sh"
        sh_script.write_text("#!/bin/bash\n" + "sh -c true\n" * STAGES)
        with running_daemon(root / "home") as daemon:
            _one_run(daemon, repo, watch=True)  # warm-up: imports, caches, database pages
            _one_run(daemon, peer_repo, watch=True)
            _timed(["bash", str(true_script)])
            for rep in range(reps):
                # alternate which goes first, so drift hits both sides alike
                if rep % 2 == 0:
                    watched.append(_one_run(daemon, repo, watch=True))
                    polled.append(_one_run(daemon, repo, watch=False))
                bash_true.append(_timed(["bash", str(true_script)]))
                bash_sh.append(_timed(["bash", str(sh_script)]))
                py_sh.append(python_spawns(STAGES))
                if rep % 2 == 1:
                    polled.append(_one_run(daemon, repo, watch=False))
                    watched.append(_one_run(daemon, repo, watch=True))
                peer.append(_one_run(daemon, peer_repo, watch=True)["wall"])

    def col(runs: list[dict[str, Any]], key: str) -> list[float]:
        return [r[key] for r in runs]

    def per_stage_ms(values: list[float], baseline: list[float]) -> float:
        return statistics.median(
            (v - b) / STAGES * 1000 for v, b in zip(values, baseline, strict=True)
        )

    def med_ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    overhead = per_stage_ms(col(watched, "wall"), bash_true)
    overhead_records = per_stage_ms(col(watched, "daemon_run"), bash_true)
    overhead_polled = per_stage_ms(col(polled, "wall"), bash_true)
    overhead_polled_records = per_stage_ms(col(polled, "daemon_run"), bash_true)
    overhead_chain = per_stage_ms(col(watched, "chain"), bash_true)
    overhead_vs_sh = per_stage_ms(col(watched, "wall"), bash_sh)
    overhead_vs_py = per_stage_ms(col(watched, "wall"), py_sh)
    bash = med_ms(bash_true)
    figures = [
        Figure(
            "overhead per stage (submit to final event)",
            overhead,
            "ms",
            TARGET_MS,
            note="(run wall - bash /bin/true x50) / 50, median of paired repetitions",
        ),
        Figure(
            "overhead per stage (daemon records)",
            overhead_records,
            "ms",
            TARGET_MS,
            note="(run finished_at - started_at - bash wall) / 50",
        ),
        Figure(
            "overhead per stage, not watched (submit to idle)", overhead_polled, "ms", headline=True
        ),
        Figure("overhead per stage, not watched (records)", overhead_polled_records, "ms"),
        Figure("overhead per stage (first stage start to last end)", overhead_chain, "ms"),
        Figure("overhead per stage vs bash `sh -c true` x50", overhead_vs_sh, "ms"),
        Figure(
            "overhead per stage vs python `sh -c true` x50",
            overhead_vs_py,
            "ms",
            TARGET_VS_PYTHON_MS,
            note="(run wall, watched - python spawning sh -c true x50) / 50",
        ),
        Figure(
            "run wall, 50 stages (watched)",
            med_ms(col(watched, "wall")),
            "ms",
            baseline=bash,
            baseline_name="bash /bin/true x50",
        ),
        Figure(
            "run wall, 50 stages (not watched)",
            med_ms(col(polled, "wall")),
            "ms",
            baseline=bash,
            baseline_name="bash /bin/true x50",
        ),
        Figure("baseline: bash /bin/true x50", bash, "ms"),
        Figure("baseline: bash `sh -c true` x50", med_ms(bash_sh), "ms"),
        Figure("baseline: python subprocess `sh -c true` x50", med_ms(py_sh), "ms"),
        Figure(
            "daemon CPU per stage (watched)",
            med_ms(col(watched, "daemon_cpu")) / STAGES,
            "ms",
            TARGET_CPU_MS,
        ),
        Figure(
            "daemon CPU per stage (not watched)", med_ms(col(polled, "daemon_cpu")) / STAGES, "ms"
        ),
        Figure(
            "  of which user (not watched)", med_ms(col(polled, "daemon_user_cpu")) / STAGES, "ms"
        ),
        Figure(
            "  of which system (not watched)",
            med_ms(col(polled, "daemon_system_cpu")) / STAGES,
            "ms",
        ),
        Figure("submit RPC", med_ms(col(watched, "submit_rpc")), "ms"),
        Figure("queued (created_at to started_at)", med_ms(col(watched, "queue")), "ms"),
        Figure("checkout (run start to first stage start)", med_ms(col(watched, "checkout")), "ms"),
        Figure("stage started_at to finished_at", med_ms(col(watched, "stage_median")), "ms"),
        Figure(
            "stage started_at to finished_at (not watched)",
            med_ms(col(polled, "stage_median")),
            "ms",
        ),
        Figure(
            "gap from a stage's end to the next start", med_ms(col(watched, "gap_median")), "ms"
        ),
        Figure("close-out (last stage end to run end)", med_ms(col(watched, "close_out")), "ms"),
        Figure("run finished_at to final event seen", med_ms(col(watched, "notify")), "ms"),
        Figure(
            f"peer figure: {PEER_STAGES}-stage chain of `true`, submit to final WatchRun event",
            med_ms(peer),
            "ms",
            headline=True,
        ),
    ]
    keys = list(watched[0])
    return BenchResult(
        name=NAME,
        figures=figures,
        parameters={
            "stages": STAGES,
            "peer_stages": PEER_STAGES,
            "repetitions": reps,
            "target_ms_per_stage": TARGET_MS,
            "wait": "watched: WatchRun until the final run event; "
            "not watched: GetServerStatus polled every 5 ms",
        },
        samples={
            "units": "ms",
            **{f"watched_{key}": ms(col(watched, key)) for key in keys},
            **{f"not_watched_{key}": ms(col(polled, key)) for key in keys},
            "bash_true_x50": ms(bash_true),
            "bash_sh_c_true_x50": ms(bash_sh),
            "python_sh_c_true_x50": ms(py_sh),
            f"peer_chain_{PEER_STAGES}_wall": ms(peer),
        },
        summary={
            "overhead_ms_per_stage": overhead,
            "overhead_ms_per_stage_daemon_records": overhead_records,
            "overhead_ms_per_stage_not_watched": overhead_polled,
            "overhead_ms_per_stage_not_watched_records": overhead_polled_records,
            "overhead_ms_per_stage_chain_only": overhead_chain,
            "overhead_ms_per_stage_vs_sh_c_true": overhead_vs_sh,
            "overhead_ms_per_stage_vs_python_sh_c_true": overhead_vs_py,
            "target_met": overhead <= TARGET_MS,
            "medians_ms_watched": {key: med_ms(col(watched, key)) for key in keys},
            "medians_ms_not_watched": {key: med_ms(col(polled, key)) for key in keys},
        },
    )
