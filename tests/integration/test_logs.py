"""Stage logs: every byte delivered, live or later, with bounded memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from conveyor.v1 import runs_pb2, server_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.repos import GitRepo

# 3000 numbered lines over ~1.5 s, then a tail without a newline.
TICKER = """
name: ticker
stages:
  tick:
    run: |
      i=0
      while [ $i -lt 3000 ]; do
        echo "line $i"
        i=$((i+1))
        [ $((i % 300)) -eq 0 ] && sleep 0.15
      done
      printf 'no newline at the end'
"""


def _expected_ticker_output() -> bytes:
    return b"".join(f"line {i}\n".encode() for i in range(3000)) + b"no newline at the end"


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_followers_that_start_before_during_and_after_see_every_byte(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(TICKER)
    run = daemon.submit(repo.path)
    results: dict[str, bytes] = {}

    def follow(name: str, delay: float) -> None:
        time.sleep(delay)
        results[name] = daemon.logs(run.id, "tick", follow=True)

    # one follower before the stage starts, one while it runs
    threads = [
        threading.Thread(target=follow, args=("before", 0.0)),
        threading.Thread(target=follow, args=("during", 0.5)),
    ]
    for t in threads:
        t.start()
    final = daemon.wait(run.id)
    for t in threads:
        t.join(30)
    after = daemon.logs(run.id, "tick")
    log = after
    assert log.endswith(_expected_ticker_output())
    assert results["before"] == log
    assert results["during"] == log
    assert stage(final, "tick").log_size == len(log)


def test_log_stream_resumes_from_a_byte_offset(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(TICKER)
    run = daemon.wait(daemon.submit(repo.path).id)
    whole = daemon.logs(run.id, "tick")
    chunks = list(
        daemon.stub.StreamLogs(runs_pb2.StreamLogsRequest(run_id=run.id, stage="tick", offset=1000))
    )
    assert chunks[0].offset == 1000
    assert b"".join(c.data for c in chunks) == whole[1000:]
    offsets = [c.offset for c in chunks]
    sizes = [len(c.data) for c in chunks]
    assert all(offsets[i] + sizes[i] == offsets[i + 1] for i in range(len(chunks) - 1))


def test_huge_line_and_output_without_newlines_keep_daemon_memory_bounded(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(
        """
name: flood
stages:
  line:
    run: head -c 10485760 /dev/zero | tr '\\0' 'x'; echo
  stream:
    run: head -c 31457280 /dev/zero | tr '\\0' 'y'
"""
    )
    assert daemon.proc is not None
    pid = daemon.proc.pid
    before = _peak_rss_kib(pid)
    run = daemon.submit(repo.path)
    received = daemon.logs(run.id, "stream", follow=True)
    final = daemon.wait(run.id)
    assert final.status == runs_pb2.RUN_STATUS_SUCCEEDED
    growth_mib = (_peak_rss_kib(pid) - before) / 1024
    assert growth_mib < 48, f"daemon peak RSS grew {growth_mib:.0f} MiB"
    assert received.endswith(b"y" * 31457280)
    line_log = daemon.logs(run.id, "line")
    assert line_log.endswith(b"x" * 10485760 + b"\n")
    assert stage(final, "line").log_size == len(line_log)


def _status(daemon: DaemonProcess) -> server_pb2.GetServerStatusResponse:
    return daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest())


def _thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def test_clients_leaving_mid_stream_leak_no_streams_or_threads(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(
        "name: long\nstages:\n  s:\n    run: while true; do echo tick; sleep 0.05; done\n"
    )
    run = daemon.submit(repo.path)
    daemon.wait_for_stage(run.id, "s")
    assert daemon.proc is not None
    pid = daemon.proc.pid
    threads_before = None
    for round_ in range(3):
        calls: list[Any] = []
        for _ in range(10):
            logs = daemon.stub.StreamLogs(
                runs_pb2.StreamLogsRequest(run_id=run.id, stage="s", follow=True)
            )
            next(iter(logs))  # the stream is live
            calls.append(logs)
            events = daemon.stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id))
            next(iter(events))
            calls.append(events)
        assert _status(daemon).active_streams == 20
        for call in calls:
            call.cancel()  # the client goes away
        deadline = time.monotonic() + 10
        while _status(daemon).active_streams and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _status(daemon).active_streams == 0
        if round_ == 0:
            threads_before = _thread_count(pid)
    assert threads_before is not None
    # A stream stuck after its client left would hold a gRPC worker thread:
    # 20 per round. Pools may still grow a little (idle workers linger).
    assert _thread_count(pid) < threads_before + 20, "threads do not pile up across rounds"
    # a deadline ends a stream the same way
    try:
        for _ in daemon.stub.StreamLogs(
            runs_pb2.StreamLogsRequest(run_id=run.id, stage="s", follow=True), timeout=0.5
        ):
            pass
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while _status(daemon).active_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _status(daemon).active_streams == 0
    daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id))
