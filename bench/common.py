"""Shared helpers: scratch folders, daemons, pipelines, timing, statistics,
RSS sampling, tables and result files."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import psutil
import yaml
from google.protobuf.timestamp_pb2 import Timestamp

from bench import REPO_ROOT
from conveyor.v1 import runs_pb2, server_pb2
from tests.support.daemon import FINISHED, DaemonProcess
from tests.support.repos import make_repo

RESULTS_DIR = REPO_ROOT / "bench" / "results"
#: "MB" in figures is 2**20 bytes, as in "200 MB = head -c 209715200".
MB = 1 << 20


# -- scratch folders, daemons, pipelines ------------------------------------------


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A throwaway folder with a short path (unix socket paths are limited to ~107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="cvb-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_daemon(home: Path, *args: str) -> Iterator[DaemonProcess]:
    """A ``conveyord`` serving on a unix socket in ``home``; stopped on exit."""
    daemon = DaemonProcess(home, args=list(args)).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def pipeline_repo(path: Path, name: str, stages: dict[str, dict[str, Any]]) -> Path:
    """A git repository whose ``conveyor.yaml`` holds the given stages."""
    text = yaml.safe_dump({"name": name, "stages": stages}, sort_keys=False)
    return make_repo(path, {"conveyor.yaml": text}).path


def submit(daemon: DaemonProcess, repo: Path) -> runs_pb2.Run:
    reply = daemon.stub.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=str(repo), ref="main"), timeout=60
    )
    return reply.run


def wait_finished(daemon: DaemonProcess, run_id: str, timeout: float = 120) -> float:
    """Follow the run's events until its final status arrives.

    Returns ``time.perf_counter()`` at the moment the final event was received.
    """
    call = daemon.stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id), timeout=timeout)
    try:
        for event in call:
            if event.kind == runs_pb2.RUN_EVENT_KIND_RUN_STATUS and event.run_status in FINISHED:
                return time.perf_counter()
    finally:
        call.cancel()  # type: ignore[no-untyped-call]
    raise RuntimeError(f"run {run_id}: event stream ended before the run finished")


def wait_idle(daemon: DaemonProcess, interval: float = 0.005, timeout: float = 120) -> float:
    """Poll GetServerStatus (no database work) until no run is queued or active.

    A lighter way to wait than WatchRun, whose reads load on the daemon.
    Returns ``time.perf_counter()`` when the daemon was first seen idle.
    """
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        status = daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest(), timeout=10)
        if status.active_runs + status.queued_runs == 0:
            return time.perf_counter()
        time.sleep(interval)
    raise RuntimeError(f"the daemon still had runs after {timeout} s")


def wait_stage_status(
    daemon: DaemonProcess, run_id: str, stage: str, status: int, timeout: float = 60
) -> float:
    """Follow the run's events until ``stage`` reaches ``status``; returns perf_counter then."""
    call = daemon.stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id), timeout=timeout)
    try:
        for event in call:
            if event.stage == stage and event.stage_status == status:
                return time.perf_counter()
    finally:
        call.cancel()  # type: ignore[no-untyped-call]
    raise RuntimeError(f"run {run_id}: stage {stage} never reached status {status}")


def get_run(daemon: DaemonProcess, run_id: str) -> runs_pb2.Run:
    return daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=30)


def seconds(ts: Timestamp) -> float:
    """A protobuf Timestamp as seconds since the epoch."""
    return ts.seconds + ts.nanos / 1e9


def run_status_name(value: int) -> str:
    return runs_pb2.RunStatus.Name(runs_pb2.RunStatus.ValueType(value)).removeprefix("RUN_STATUS_")


def rpc_error_text(exc: grpc.RpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def shell_seconds(script: str) -> float:
    """Wall time of ``sh -c script`` from just before spawning to its exit."""
    start = time.perf_counter()
    subprocess.run(["sh", "-c", script], check=True)
    return time.perf_counter() - start


# -- statistics -----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), interpolating linearly between ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def describe(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """n, min, p50, p90, p99, max, mean and stdev of ``values``, times ``scale``."""
    if not values:
        return {"n": 0}
    stats = {
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }
    return {"n": len(values), **{key: value * scale for key, value in stats.items()}}


def ms(values: Sequence[float]) -> list[float]:
    """Seconds to milliseconds, rounded to the microsecond."""
    return [round(v * 1000, 3) for v in values]


# -- memory -------------------------------------------------------------------------


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    return int(psutil.Process(pid).memory_info().rss)


def thread_count(pid: int) -> int:
    """Threads of ``pid`` now."""
    return int(psutil.Process(pid).num_threads())


def idle_rss(pid: int, duration: float = 0.5, interval: float = 0.02) -> int:
    """Median RSS of ``pid`` sampled over ``duration`` seconds while it is idle."""
    samples: list[int] = []
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        samples.append(rss(pid))
        time.sleep(interval)
    return int(statistics.median(samples))


class CpuMeter:
    """CPU seconds used between ``__enter__`` and ``__exit__``: by the daemon
    (all its threads), by its children that it reaped (stage processes), and
    by this client process."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._before: tuple[float, ...] = ()
        self.daemon_user = self.daemon_system = self.children = self.client = self.wall = 0.0

    def _now(self) -> tuple[float, ...]:
        times = self._process.cpu_times()
        return (
            float(times.user),
            float(times.system),
            float(times.children_user + times.children_system),
            time.process_time(),
            time.perf_counter(),
        )

    def __enter__(self) -> CpuMeter:
        self._before = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        after = self._now()
        self.daemon_user, self.daemon_system, self.children, self.client, self.wall = (
            a - b for a, b in zip(after, self._before, strict=True)
        )

    @property
    def daemon(self) -> float:
        return self.daemon_user + self.daemon_system

    def as_dict(self) -> dict[str, float]:
        return {
            "wall_s": self.wall,
            "daemon_user_cpu_s": self.daemon_user,
            "daemon_system_cpu_s": self.daemon_system,
            "stage_processes_cpu_s": self.children,
            "client_cpu_s": self.client,
        }


class RssSampler:
    """Samples the RSS of one process every ``interval`` seconds in a thread.

    Use as a context manager; :attr:`peak` is the largest sample.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._start = 0.0

    def _loop(self) -> None:
        process = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                value = int(process.memory_info().rss)
            except psutil.Error:
                return
            self.samples.append((time.perf_counter() - self._start, value))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max((value for _, value in self.samples), default=0)

    def series_mb(self, max_points: int = 500) -> list[tuple[float, float]]:
        """``(seconds, MB)`` samples, thinned to at most ``max_points`` (peak kept)."""
        step = max(1, math.ceil(len(self.samples) / max_points))
        peak_index = max(range(len(self.samples)), key=lambda i: self.samples[i][1], default=0)
        keep = sorted(set(range(0, len(self.samples), step)) | {peak_index})
        return [
            (round(self.samples[i][0], 3), round(self.samples[i][1] / MB, 2))
            for i in keep
            if i < len(self.samples)
        ]


# -- figures, tables, results ---------------------------------------------------------


@dataclass
class Figure:
    """One reported number, with its target and baseline when it has them."""

    name: str
    value: float | None
    unit: str
    #: Met when ``value <= target`` (or ``>=`` with ``higher_is_better``).
    target: float | None = None
    higher_is_better: bool = False
    #: A comparable figure measured in the same run (same unit).
    baseline: float | None = None
    baseline_name: str = ""
    note: str = ""
    #: Shown in the summary table even without a target or baseline.
    headline: bool = False

    @property
    def in_summary(self) -> bool:
        return self.headline or self.target is not None or self.baseline is not None

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.value is None or math.isnan(self.value):
            return False
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'>=' if self.higher_is_better else '<='} {fmt(self.target)} {self.unit}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "target_text": self.target_text(),
            "met": self.met,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio_vs_baseline": self.ratio,
            "note": self.note,
        }


@dataclass
class BenchResult:
    name: str
    figures: list[Figure]
    parameters: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value)}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: ""}[met]


def figures_table(figures: Sequence[Figure], *, with_benchmark: str = "") -> str:
    headers = ["figure", "value", "unit", "target", "met?", "baseline", "x baseline"]
    rows = [
        [
            f"{with_benchmark}{f.name}",
            fmt(f.value),
            f.unit,
            f.target_text(),
            met_text(f.met),
            f"{fmt(f.baseline)} ({f.baseline_name})" if f.baseline is not None else "",
            f"{f.ratio:.2f}" if f.ratio is not None else "",
        ]
        for f in figures
    ]
    return table(headers, rows)


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{'-dirty' if dirty else ''}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_mb": round(psutil.virtual_memory().total / MB),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "git_revision": _git_revision(),
        "versions": {d: _version(d) for d in ("grpcio", "trio", "protobuf", "psutil")},
    }


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path


def write_result(result: BenchResult, *, quick: bool) -> Path:
    """``bench/results/<name>.json``: machine, parameters, raw samples, summary, figures."""
    return write_json(
        RESULTS_DIR / f"{result.name}.json",
        {
            "benchmark": result.name,
            "quick": quick,
            "machine": machine_info(),
            "duration_seconds": round(result.seconds, 2),
            "parameters": result.parameters,
            "summary": result.summary,
            "figures": [f.as_dict() for f in result.figures],
            "samples": result.samples,
        },
    )


def report(result: BenchResult, *, quick: bool) -> Path:
    """Print the benchmark's table and write its result file."""
    print(f"\n== {result.name} ({result.seconds:.1f} s) ==")
    print(figures_table(result.figures))
    path = write_result(result, quick=quick)
    print(f"-> {path.relative_to(REPO_ROOT)}")
    return path
