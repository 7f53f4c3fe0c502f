"""Pipeline validation time against stage count: ``ValidatePipeline`` on a
chain of N stages (each needs the one before), N from 250 to 4000, through
a real daemon whose ``max_stages`` is raised to the largest N.

Linear validation costs the same per stage whatever N is: the figure with a
target is the per-stage time at the largest N divided by that at the
smallest (1.0 is perfectly linear; a quadratic validator would give 16).
While the largest file is being validated, a second client checks the
daemon's health over and over; the slowest answer shows that validation
runs beside the loop, not on it.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import BenchResult, Figure, ms, running_daemon, scratch_dir
from conveyor.v1 import pipelines_pb2
from tests.support.daemon import DaemonProcess

NAME = "validation"
SIZES = [250, 500, 1000, 2000, 4000]
QUICK_SIZES = [250, 500, 1000, 2000]
#: Per-stage time at the largest size over the smallest: at most this is linear.
TARGET_RATIO = 2.0


def chain_file(stages: int) -> str:
    lines = ["name: chain", "stages:"]
    for i in range(stages):
        lines += [f"  s{i}:", "    run: 'true'"]
        if i:
            lines.append(f"    needs: [s{i - 1}]")
    return "\n".join(lines) + "\n"


def _validate(daemon: DaemonProcess, text: str) -> float:
    """Seconds for one ValidatePipeline call that finds the file valid."""
    started = time.perf_counter()
    reply = daemon.stub.ValidatePipeline(
        pipelines_pb2.ValidatePipelineRequest(content=text), timeout=300
    )
    took = time.perf_counter() - started
    if not reply.valid:
        raise RuntimeError(f"chain not valid: {reply.diagnostics[0].message}")
    return took


def _health_while(daemon: DaemonProcess, text: str) -> list[float]:
    """Health check latencies (s) while ``text`` is being validated."""
    assert daemon.channel is not None
    health = health_pb2_grpc.HealthStub(daemon.channel)
    done = threading.Event()
    latencies: list[float] = []

    def validate() -> None:
        try:
            _validate(daemon, text)
        finally:
            done.set()

    worker = threading.Thread(target=validate)
    worker.start()
    while not done.is_set():
        started = time.perf_counter()
        health.Check(health_pb2.HealthCheckRequest(), timeout=60)
        latencies.append(time.perf_counter() - started)
        time.sleep(0.005)
    worker.join()
    return latencies


def run(quick: bool) -> BenchResult:
    sizes = QUICK_SIZES if quick else SIZES
    reps = 3 if quick else 5
    files = {n: chain_file(n) for n in sizes}
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    limit = ("--max-stages", str(max(sizes)))
    with scratch_dir() as root, running_daemon(root / "home", *limit) as daemon:
        _validate(daemon, files[sizes[0]])  # warm-up
        for _ in range(reps):
            for n in sizes:
                samples[n].append(_validate(daemon, files[n]))
        health = _health_while(daemon, files[sizes[-1]])

    per_stage_us = {n: statistics.median(samples[n]) / n * 1e6 for n in sizes}
    smallest, largest = sizes[0], sizes[-1]
    ratio = per_stage_us[largest] / per_stage_us[smallest]
    figures = [
        Figure(
            f"per-stage time, {largest} vs {smallest} stages",
            ratio,
            "x",
            TARGET_RATIO,
            note=f"1.0 is linear; quadratic would be {largest // smallest}",
        ),
        *(
            Figure(
                f"validation of {n} stages ({len(files[n]) / 1024:.0f} KiB)",
                statistics.median(samples[n]) * 1000,
                "ms",
                headline=n == largest,
            )
            for n in sizes
        ),
        *(Figure(f"  per stage at {n}", per_stage_us[n], "us") for n in sizes),
        Figure(
            f"slowest health check during the {largest}-stage validation",
            max(health) * 1000,
            "ms",
            headline=True,
            note=f"{len(health)} checks",
        ),
    ]
    parameters: dict[str, Any] = {"sizes": sizes, "repetitions": reps}
    return BenchResult(
        NAME,
        figures,
        parameters=parameters,
        samples={
            "validation_ms": {str(n): ms(samples[n]) for n in sizes},
            "health_ms": ms(health),
        },
        summary={"per_stage_us": {str(n): round(per_stage_us[n], 2) for n in sizes}},
    )
