"""Many live followers: 1,000 open ``WatchRun`` and ``StreamLogs(follow)``
streams on running runs, while health checks and ``GetRun`` are timed.

Five runs each have one stage that prints a line every half second. Half of
the followers watch a run's events, half follow its stage's log; they are
opened from one client process over several connections (HTTP/2 carries
many streams per connection, as a dashboard or a CI frontend would), through
the daemon's unix socket with authentication on (the default: every call
goes through the peer-uid relay and the admission checks).

While all of them are open, health ``Check`` and ``GetRun`` are timed from
another connection, one call after the other. Reported: how many followers
were open at once (refused ones are counted, not fatal), the p50/p99 of both
calls against the same calls timed on the idle daemon just before (the
baseline), the daemon's RSS per follower, and, once the runs are cancelled,
how many followers saw their stream end properly (the run's final event, or
the log's end) and whether the memory came back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import (
    MB,
    BenchResult,
    Figure,
    RssSampler,
    describe,
    idle_rss,
    ms,
    pipeline_repo,
    running_daemon,
    scratch_dir,
    submit,
    wait_stage_status,
)
from conveyor.v1 import runs_pb2, service_pb2_grpc
from tests.support.daemon import FINISHED, DaemonProcess

NAME = "followers"
TARGET_FOLLOWERS = 1000
TARGET_P99_MS = 50.0
RUNS = 5
#: Connections the followers are spread over.
CHANNELS = 20
STAGE = "tick"
TICKER = {STAGE: {"run": "i=0; while [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); sleep 0.5; done"}}


class _Followers:
    """The client side: followers as tasks of one asyncio loop in a thread."""

    def __init__(self, address: str, run_ids: list[str], count: int) -> None:
        self.address = address
        self.run_ids = run_ids
        self.count = count
        self.opened = 0
        self.refused: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()
        self.messages = 0
        self.all_open = threading.Event()
        self.done = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="followers", daemon=True)
        self._first: list[asyncio.Future[None]] = []

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _main(self) -> None:
        self.loop.run_until_complete(self._follow_all())

    async def _follow_all(self) -> None:
        channels = [grpc.aio.insecure_channel(self.address) for _ in range(CHANNELS)]
        stubs = [service_pb2_grpc.ConveyorServiceStub(c) for c in channels]
        tasks = []
        for i in range(self.count):
            stub = stubs[i % CHANNELS]
            run_id = self.run_ids[i % len(self.run_ids)]
            first = self.loop.create_future()
            self._first.append(first)
            follow = self._watch if i % 2 == 0 else self._logs
            tasks.append(asyncio.create_task(follow(stub, run_id, first)))
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the opened ones start
        await asyncio.gather(*self._first, return_exceptions=True)
        self.all_open.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close(None)
        self.done.set()

    async def _consume(self, call: Any, first: asyncio.Future[None], kind: str) -> bool:
        """Read the stream; True when it ended properly."""
        last: Any = None
        try:
            async for message in call:
                if not first.done():
                    self.opened += 1
                    first.set_result(None)
                self.messages += 1
                last = message
        except grpc.aio.AioRpcError as exc:
            if not first.done():
                self.refused[exc.code().name] += 1
                first.set_result(None)
            else:
                self.ended[f"{kind}: {exc.code().name}"] += 1
            return False
        if not first.done():
            first.set_result(None)
        if kind == "watch":
            return last is not None and last.run_status in FINISHED
        return True

    async def _watch(self, stub: Any, run_id: str, first: asyncio.Future[None]) -> None:
        call = stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run_id), timeout=600)
        if await self._consume(call, first, "watch"):
            self.ended["watch: final event"] += 1

    async def _logs(self, stub: Any, run_id: str, first: asyncio.Future[None]) -> None:
        request = runs_pb2.StreamLogsRequest(run_id=run_id, stage=STAGE, follow=True)
        call = stub.StreamLogs(request, timeout=600)
        if await self._consume(call, first, "logs"):
            self.ended["logs: end of log"] += 1


def _probe(daemon: DaemonProcess, run_id: str, seconds: float) -> dict[str, list[float]]:
    """Health Check and GetRun, one after the other, for ``seconds``."""
    assert daemon.channel is not None
    health = health_pb2_grpc.HealthStub(daemon.channel)
    stub = daemon.stub
    samples: dict[str, list[float]] = {"health": [], "get_run": [], "errors": []}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for key, call in (
            ("health", lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10)),
            ("get_run", lambda: stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=10)),
        ):
            t0 = time.perf_counter()
            try:
                call()
            except grpc.RpcError:
                samples["errors"].append(time.perf_counter() - t0)
                continue
            samples[key].append(time.perf_counter() - t0)
        time.sleep(0.02)
    return samples


def run(quick: bool) -> BenchResult:
    count = 200 if quick else TARGET_FOLLOWERS
    probe_seconds = 5.0 if quick else 15.0
    with scratch_dir() as root:
        repo = pipeline_repo(root / "repo", "ticker", TICKER)
        with running_daemon(root / "home") as daemon:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            run_ids = [submit(daemon, repo).id for _ in range(RUNS)]
            for run_id in run_ids:
                wait_stage_status(daemon, run_id, STAGE, runs_pb2.STAGE_STATUS_RUNNING)
            idle = _probe(daemon, run_ids[0], probe_seconds / 3)
            rss_idle = idle_rss(pid, 1.0)
            followers = _Followers(daemon.address, run_ids, count)
            with RssSampler(pid, interval=0.1) as sampler:
                t0 = time.perf_counter()
                followers.start()
                if not followers.all_open.wait(120):
                    raise RuntimeError("the followers did not open within 120 s")
                open_seconds = time.perf_counter() - t0
                rss_open = idle_rss(pid, 1.0)
                loaded = _probe(daemon, run_ids[0], probe_seconds)
                messages_before_cancel = followers.messages
                for run_id in run_ids:
                    daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id), timeout=60)
                followers.done.wait(120)
            followers.join(10)
            time.sleep(1.0)  # the daemon lets go of what the streams held
            rss_after = idle_rss(pid, 1.0)

    def stat(samples: dict[str, list[float]], key: str) -> dict[str, float]:
        return describe(samples[key], scale=1000)

    health_idle, health_loaded = stat(idle, "health"), stat(loaded, "health")
    get_idle, get_loaded = stat(idle, "get_run"), stat(loaded, "get_run")
    opened = followers.opened
    ended_properly = followers.ended["watch: final event"] + followers.ended["logs: end of log"]
    per_follower_kb = (rss_open - rss_idle) / 1024 / opened if opened else float("nan")
    figures = [
        Figure(
            "followers open at once",
            opened,
            "streams",
            count,
            higher_is_better=True,
            note=f"refused: {dict(followers.refused)}",
        ),
        Figure(
            "health Check p99, followers open",
            health_loaded.get("p99"),
            "ms",
            TARGET_P99_MS,
            baseline=health_idle.get("p99"),
            baseline_name="no followers",
        ),
        Figure(
            "GetRun p99, followers open",
            get_loaded.get("p99"),
            "ms",
            TARGET_P99_MS,
            baseline=get_idle.get("p99"),
            baseline_name="no followers",
        ),
        Figure("health Check p50, followers open", health_loaded.get("p50"), "ms"),
        Figure("GetRun p50, followers open", get_loaded.get("p50"), "ms"),
        Figure("calls that failed while followers were open", len(loaded["errors"]), "calls", 0),
        Figure(
            "followers that saw their stream end properly",
            ended_properly,
            "streams",
            opened,
            higher_is_better=True,
            note=f"{dict(followers.ended)}",
        ),
        Figure("daemon RSS per open follower", per_follower_kb, "KB", headline=True),
        Figure(
            "daemon RSS, followers open",
            rss_open / MB,
            "MB",
            baseline=rss_idle / MB,
            baseline_name="idle, runs going",
        ),
        Figure(
            "daemon RSS after the followers ended",
            rss_after / MB,
            "MB",
            baseline=rss_idle / MB,
            baseline_name="idle, runs going",
        ),
        Figure("peak RSS", sampler.peak / MB, "MB"),
        Figure(f"time to open {count} followers", open_seconds * 1000, "ms"),
        Figure("messages the followers received before the cancel", messages_before_cancel, "msgs"),
    ]
    return BenchResult(
        name=NAME,
        figures=figures,
        parameters={
            "followers": count,
            "runs": RUNS,
            "channels": CHANNELS,
            "stage": TICKER[STAGE]["run"],
            "probe_seconds": probe_seconds,
            "transport": "unix socket, authentication on (peer-uid relay)",
        },
        samples={
            "units": "ms",
            "idle": {key: ms(values) for key, values in idle.items()},
            "loaded": {key: ms(values) for key, values in loaded.items()},
            "rss_series_mb": sampler.series_mb(),
        },
        summary={
            "opened": opened,
            "refused": dict(followers.refused),
            "ended": dict(followers.ended),
            "health_ms": {"idle": health_idle, "loaded": health_loaded},
            "get_run_ms": {"idle": get_idle, "loaded": get_loaded},
            "rss_mb": {"idle": rss_idle / MB, "open": rss_open / MB, "after": rss_after / MB},
        },
    )
