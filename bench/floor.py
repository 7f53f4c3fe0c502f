"""The floor: what the least a daemon bound by Conveyor's rules can do on
this machine, against issue 12's targets, beside ``conveyord`` in the same run.

The floor is :mod:`bench.floor_daemon`: a trio loop behind a grpcio server,
a SQLite store written in a worker thread with group commit, and stages
started on the loop with their output into their logs (its docstring lists
what it keeps and what it leaves out). It is measured alternated with the
daemon and with the same baselines as ``overhead``, ``latency`` and
``concurrent``:

- overhead per stage of a 50-stage chain of ``true``, submit to the run's
  end, over Python spawning ``sh -c true`` 50 times; the process's CPU per
  stage (all its threads, not its children);
- submit to the first stage's process (its own clock, ``date +%s%N``), a
  one-stage run, sequential, against Python spawning ``sh -c 'date +%s%N'``;
- the least submit to first stage can take here: a call reaching the
  floor's loop (its clock against the client's), plus Python spawning
  ``sh -c 'date +%s%N'``, measured one after the other;
- a log followed live as its stage writes it (``logstream``'s command and
  size), the client's MB/s from its first chunk to its last;
- runs per second, N five-stage diamonds (a -> {b, c} -> d -> e) submitted
  at once, all in flight together (the daemon with ``--max-concurrent-runs``
  N), and the CPU per run.

The floor is measured twice: as it is, and with ``--no-store`` (no SQLite
at all), which shows what the durability rules cost on their own. A target
the floor misses cannot be met by the daemon on this machine without
breaking a rule the floor keeps; the daemon's figure over the floor's is
what the daemon's own work costs beyond it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import grpc

from bench import concurrent, latency, logstream, overhead
from bench.common import (
    MB,
    BenchResult,
    CpuMeter,
    Figure,
    describe,
    pipeline_repo,
    running_daemon,
    scratch_dir,
    submit,
    wait_finished,
    wait_idle,
)
from bench.floor_daemon import SERVICE
from conveyor.v1 import runs_pb2
from tests.support import processes
from tests.support.daemon import DaemonProcess

NAME = "floor"
STAGES = overhead.STAGES

Stages = dict[str, dict[str, Any]]


class FloorProcess:
    """A running :mod:`bench.floor_daemon`."""

    def __init__(self, folder: Path, *args: str) -> None:
        folder.mkdir(parents=True)
        self.socket = folder / "floor.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.floor_daemon", str(self.socket), str(folder), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise RuntimeError("the floor daemon did not start")
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        self._submit = self.channel.unary_unary(f"/{SERVICE}/Submit", None, None)
        self._wait = self.channel.unary_unary(f"/{SERVICE}/Wait", None, None)
        self._ping = self.channel.unary_unary(f"/{SERVICE}/Ping", None, None)
        self._active = self.channel.unary_unary(f"/{SERVICE}/Active", None, None)
        self._follow = self.channel.unary_stream(f"/{SERVICE}/Follow", None, None)

    def follow(self, command: str) -> logstream.Received:
        """Run ``command`` as a one-stage run and read its log live."""
        received = logstream.Received()
        for data in self._follow(json.dumps({"run": command}).encode(), timeout=600):
            received.add(received.total, data)
        return received

    def to_loop(self) -> float:
        """Seconds from just before a call to the moment it reached the loop."""
        t0 = time.time_ns()
        return (int(self._ping(b"", timeout=10)) - t0) / 1e9

    def _request(self, stages: Stages) -> bytes:
        return json.dumps({"stages": stages}).encode()

    def run(self, stages: Stages) -> None:
        """Submit a run and wait for its end."""
        self._wait(self._submit(self._request(stages), timeout=60), timeout=120)

    def burst(self, stages: Stages, count: int) -> None:
        """Submit ``count`` runs at once, then wait for them all to end,
        asking every 20 ms (as ``concurrent`` waits for the daemon)."""
        futures = [self._submit.future(self._request(stages), timeout=120) for _ in range(count)]
        for future in futures:
            future.result()
        deadline = time.monotonic() + 120
        while int(self._active(b"", timeout=10)):
            if time.monotonic() > deadline:
                raise RuntimeError("the floor's runs did not end in 120 s")
            time.sleep(0.02)

    def stop(self) -> None:
        self.channel.close()
        processes.stop(self.proc)


@contextlib.contextmanager
def running_floor(folder: Path, *args: str) -> Iterator[FloorProcess]:
    floor = FloorProcess(folder, *args)
    try:
        yield floor
    finally:
        floor.stop()


class Side(Protocol):
    """One server measured: the daemon, or a floor."""

    pid: int

    def chain(self) -> None: ...
    def first_stage(self, mark: Path) -> None: ...
    def follow(self, size: int) -> float: ...
    def burst(self, count: int) -> None: ...


class FloorSide:
    def __init__(self, floor: FloorProcess) -> None:
        self.floor = floor
        self.pid = floor.proc.pid

    def chain(self) -> None:
        self.floor.run(overhead.chain(STAGES))

    def first_stage(self, mark: Path) -> None:
        self.floor.run({"t": {"run": f"date +%s%N > {mark}"}})

    def follow(self, size: int) -> float:
        received = self.floor.follow(logstream.command(size))
        if received.total != size:
            raise RuntimeError(f"the floor streamed {received.total} bytes of {size}")
        return size / MB / (received.last - received.first)

    def burst(self, count: int) -> None:
        self.floor.burst(concurrent.DIAMOND, count)


class DaemonSide:
    """``conveyord``, followed with ``WatchRun`` as the other benchmarks do."""

    def __init__(self, daemon: DaemonProcess, repos: dict[str, Path], marks: Path) -> None:
        assert daemon.proc is not None
        self.daemon = daemon
        self.pid = daemon.proc.pid
        self.repos = repos
        self.marks = marks

    def chain(self) -> None:
        wait_finished(self.daemon, submit(self.daemon, self.repos["chain"]).id)

    def first_stage(self, mark: Path) -> None:
        run = submit(self.daemon, self.repos["latency"])
        wait_finished(self.daemon, run.id)
        (self.marks / run.id).rename(mark)

    def follow(self, size: int) -> float:
        # the repository's stage prints ``size`` bytes (see run())
        followed = logstream.followed_run(self.daemon, self.repos["log"], size)
        if followed["byte_errors"]:
            raise RuntimeError(f"the daemon's stream was off by {followed['byte_errors']} bytes")
        return float(followed["client_mb_s"])

    def burst(self, count: int) -> None:
        stub = self.daemon.stub
        request = runs_pb2.SubmitRunRequest(repository=str(self.repos["diamond"]), ref="main")
        for future in [stub.SubmitRun.future(request, timeout=120) for _ in range(count)]:
            future.result()
        wait_idle(self.daemon, interval=0.02)


def _timed(side: Side, work: Callable[[], None]) -> tuple[float, float]:
    """Wall seconds and the side's CPU seconds (all its threads) for ``work``."""
    with CpuMeter(side.pid) as cpu:
        work()
    return cpu.wall, cpu.daemon


def _first_stage(side: Side, mark: Path) -> float:
    """Seconds from just before the submit to the stage process's clock."""
    t0 = time.time_ns()
    side.first_stage(mark)
    return (int(mark.read_text()) - t0) / 1e9


SIDES = ("daemon", "floor", "floor without a store")


def run(quick: bool) -> BenchResult:
    reps = 4 if quick else 10
    latency_samples = 40 if quick else 150
    burst = 100 if quick else 200
    log_size = (50 if quick else 200) * MB
    log_reps = 2 if quick else 5
    chain: dict[str, list[tuple[float, float]]] = {name: [] for name in SIDES}
    first: dict[str, list[float]] = {name: [] for name in SIDES}
    bursts: dict[str, list[tuple[float, float]]] = {name: [] for name in SIDES}
    follows: dict[str, list[float]] = {name: [] for name in SIDES}
    python_sh: list[float] = []
    spawn_date: list[float] = []
    to_loop: list[float] = []
    with scratch_dir() as root:
        marks = root / "marks"
        marks.mkdir()
        date = f'date +%s%N > {marks}/"$CONVEYOR_RUN_ID"'
        repos = {
            "chain": pipeline_repo(root / "chain", "chain", overhead.chain(STAGES)),
            "latency": pipeline_repo(root / "latency", "latency", {"t": {"run": date}}),
            "diamond": pipeline_repo(root / "diamond", "diamond", concurrent.DIAMOND),
            "log": pipeline_repo(
                root / "log", "log", {logstream.STAGE: {"run": logstream.command(log_size)}}
            ),
        }
        with (
            running_daemon(root / "home", "--max-concurrent-runs", str(burst)) as daemon,
            running_floor(root / "floor") as floor,
            running_floor(root / "bare", "--no-store") as bare,
        ):
            sides: dict[str, Side] = {
                "daemon": DaemonSide(daemon, repos, marks),
                "floor": FloorSide(floor),
                "floor without a store": FloorSide(bare),
            }
            for side in sides.values():  # warm-up: imports, caches, database pages
                side.chain()
                for _ in range(latency.WARMUP):
                    _first_stage(side, marks / "warm-up")
            # Each round takes the sides in another order, so drift hits all alike.
            orders = [list(SIDES[i:] + SIDES[:i]) for i in range(len(SIDES))]
            for rep in range(reps):
                for name in orders[rep % len(orders)]:
                    chain[name].append(_timed(sides[name], sides[name].chain))
                python_sh.append(overhead.python_spawns(STAGES))
            for i in range(latency_samples):
                for name in orders[i % len(orders)]:
                    first[name].append(
                        _first_stage(sides[name], marks / f"{i}-{SIDES.index(name)}")
                    )
                spawn_date.append(latency.spawn_baseline())
                to_loop.append(floor.to_loop())
            for rep in range(log_reps):
                for name in orders[rep % len(orders)]:
                    follows[name].append(sides[name].follow(log_size))
            for rep in range(2):
                for name in orders[rep % len(orders)]:
                    work = functools.partial(sides[name].burst, burst)
                    bursts[name].append(_timed(sides[name], work))
    params = {
        "chain_stages": STAGES,
        "chain_repetitions": reps,
        "latency_samples_per_side": latency_samples,
        "burst_runs": burst,
        "bursts_per_side": 2,
        "log_bytes": log_size,
        "logs_followed_per_side": log_reps,
    }
    return _result(params, chain, first, bursts, follows, python_sh, spawn_date, to_loop)


def _versus(
    floor: dict[str, float] | None, key: str, baseline: float | None = None, what: str = ""
) -> dict[str, Any]:
    """A figure's baseline: the floor's ``key`` when given the floor's
    figures, else ``baseline`` named ``what``."""
    if floor is not None:
        return {"baseline": floor[key], "baseline_name": "the floor"}
    return {"baseline": baseline, "baseline_name": what}


def _result(
    params: dict[str, Any],
    chain: dict[str, list[tuple[float, float]]],
    first: dict[str, list[float]],
    bursts: dict[str, list[tuple[float, float]]],
    follows: dict[str, list[float]],
    python_sh: list[float],
    spawn_date: list[float],
    to_loop: list[float],
) -> BenchResult:
    burst = params["burst_runs"]
    py_ms = statistics.median(python_sh) / STAGES * 1000
    spawn = describe(spawn_date, scale=1000)
    figures: list[Figure] = []
    floor: dict[str, float] = {}
    for name in ("floor without a store", "floor", "daemon"):
        overhead_ms = statistics.median(
            (wall - base) / STAGES * 1000
            for (wall, _), base in zip(chain[name], python_sh, strict=True)
        )
        cpu_ms = statistics.median(cpu for _, cpu in chain[name]) / STAGES * 1000
        lat = describe(first[name], scale=1000)
        rate = statistics.median(burst / wall for wall, _ in bursts[name])
        run_cpu = statistics.median(cpu for _, cpu in bursts[name]) / burst * 1000
        # The floor is compared with the baselines, the daemon with the floor.
        against = floor if name == "daemon" else None
        figures += [
            Figure(
                f"{name}: overhead per stage over python `sh -c true` x50",
                overhead_ms,
                "ms",
                overhead.TARGET_VS_PYTHON_MS,
                **_versus(against, "overhead", py_ms, "python sh -c true, per stage"),
            ),
            Figure(
                f"{name}: CPU per stage",
                cpu_ms,
                "ms",
                overhead.TARGET_CPU_MS,
                **_versus(against, "cpu"),
            ),
            Figure(
                f"{name}: submit to stage process start, p50",
                lat["p50"],
                "ms",
                latency.TARGET_P50_MS,
                **_versus(against, "p50", spawn["p50"], "spawn sh -c date"),
            ),
            Figure(
                f"{name}: submit to stage process start, p99",
                lat["p99"],
                "ms",
                latency.TARGET_P99_MS,
                **_versus(against, "p99", spawn["p99"], "spawn sh -c date"),
            ),
            Figure(
                f"{name}: runs per second, {burst} five-stage runs at once",
                rate,
                "runs/s",
                concurrent.TARGET_RUNS_S,
                higher_is_better=True,
                **_versus(against, "rate"),
            ),
            Figure(f"{name}: CPU per run in that burst", run_cpu, "ms", headline=True),
            Figure(
                f"{name}: log followed, slowest of {len(follows[name])}",
                min(follows[name]),
                "MB/s",
                logstream.TARGET_SLOWEST_MB_S,
                higher_is_better=True,
                **_versus(against, "slowest"),
            ),
            Figure(f"{name}: log followed, median", statistics.median(follows[name]), "MB/s"),
        ]
        if name == "floor":
            floor = {
                "overhead": overhead_ms,
                "cpu": cpu_ms,
                "p50": lat["p50"],
                "p99": lat["p99"],
                "rate": rate,
                "slowest": min(follows[name]),
            }
    least = describe([a + b for a, b in zip(to_loop, spawn_date, strict=True)], scale=1000)
    figures += [
        # No target of their own: set beside the submit's targets, they say
        # how much of each a daemon has left for its work.
        Figure(
            "the least submit to first stage takes here (a call reaching the loop + a spawn), p50",
            least["p50"],
            "ms",
            headline=True,
            note=f"the submit's target: <= {latency.TARGET_P50_MS:g} ms",
        ),
        Figure(
            "the same, p99",
            least["p99"],
            "ms",
            headline=True,
            note=f"the submit's target: <= {latency.TARGET_P99_MS:g} ms",
        ),
        Figure("a call reaching the floor's loop, p50", describe(to_loop, scale=1000)["p50"], "ms"),
        Figure("baseline: python spawning `sh -c true`, per stage", py_ms, "ms"),
        Figure("baseline: python spawn `sh -c 'date +%s%N'`, p50", spawn["p50"], "ms"),
        Figure("baseline: python spawn `sh -c 'date +%s%N'`, p99", spawn["p99"], "ms"),
    ]
    return BenchResult(
        name=NAME,
        figures=figures,
        parameters=params,
        samples={
            "units": "s; chain and bursts as [wall, cpu] pairs",
            "chain": chain,
            "first_stage": first,
            "bursts": bursts,
            "log_followed_mb_s": follows,
            "python_sh_x50": python_sh,
            "spawn_date": spawn_date,
            "call_to_loop": to_loop,
        },
        summary={"first_stage_ms": {name: describe(first[name], scale=1000) for name in SIDES}},
    )
