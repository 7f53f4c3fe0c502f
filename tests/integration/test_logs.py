"""Stage logs: every byte delivered, live or later, with bounded memory.

Most tests share one daemon (``shared_daemon``); the memory test has its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from conveyor.v1 import runs_pb2, server_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.repos import GitRepo

# 3000 numbered lines then a tail without a newline. With gates, the stage
# waits for the file {before} to exist before it writes anything, and for
# {during} after the first 1500 lines.
TICKER = """
name: ticker
stages:
  tick:
    run: |
      gate() {{
        n=0
        while [ ! -e "$1" ]; do n=$((n+1)); [ $n -gt 3000 ] && exit 1; sleep 0.01; done
      }}
      {wait_before}
      i=0
      while [ $i -lt 1500 ]; do echo "line $i"; i=$((i+1)); done
      {wait_during}
      while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done
      printf 'no newline at the end'
"""


def ticker(before: Path | None = None, during: Path | None = None) -> str:
    return TICKER.format(
        wait_before=f'gate "{before}"' if before else "",
        wait_during=f'gate "{during}"' if during else "",
    )


def _expected_ticker_output() -> bytes:
    return b"".join(f"line {i}\n".encode() for i in range(3000)) + b"no newline at the end"


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _status(daemon: DaemonProcess) -> server_pb2.GetServerStatusResponse:
    return daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest())


def _until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.01)


def test_followers_that_start_before_during_and_after_see_every_byte(
    shared_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    daemon = shared_daemon
    before_gate, during_gate = tmp_path / "before", tmp_path / "during"
    run = daemon.submit(pipeline_repo(ticker(before_gate, during_gate)).path)
    results: dict[str, bytes] = {}

    def follower(name: str) -> threading.Thread:
        """Follow the log in a thread; return once the daemon serves the stream."""
        thread = threading.Thread(
            target=lambda: results.update({name: daemon.logs(run.id, "tick", follow=True)})
        )
        count = _status(daemon).active_streams
        thread.start()
        _until(lambda: _status(daemon).active_streams > count, f"the {name} follower streams")
        return thread

    # before the stage writes anything
    threads = [follower("before")]
    before_gate.touch()
    # during: the stage wrote its first half and waits
    _until(lambda: b"line 1499\n" in daemon.logs(run.id, "tick"), "the first half written")
    threads.append(follower("during"))
    during_gate.touch()
    final = daemon.wait(run.id)
    for t in threads:
        t.join(30)
    log = daemon.logs(run.id, "tick")  # after
    assert log.endswith(_expected_ticker_output())
    assert results["before"] == log
    assert results["during"] == log
    assert stage(final, "tick").log_size == len(log)


def test_log_stream_resumes_from_a_byte_offset(
    shared_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    daemon = shared_daemon
    repo = pipeline_repo(ticker())
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


def _thread_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def test_clients_leaving_mid_stream_leak_no_streams_or_threads(
    shared_daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    daemon = shared_daemon
    repo = pipeline_repo(
        "name: long\nstages:\n  s:\n    run: while true; do echo tick; sleep 0.05; done\n"
    )
    run = daemon.submit(repo.path)
    daemon.wait_for_stage(run.id, "s")
    # streams of other tests on the shared daemon; the one wait_for_stage
    # left ends as soon as the daemon hears its client went away
    deadline = time.monotonic() + 10
    while _status(daemon).active_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    base = _status(daemon).active_streams
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
        assert _status(daemon).active_streams == base + 20
        for call in calls:
            call.cancel()  # the client goes away
        deadline = time.monotonic() + 10
        while _status(daemon).active_streams > base and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _status(daemon).active_streams == base
        if round_ == 0:
            threads_before = _thread_count(pid)
    assert threads_before is not None
    # A stream stuck after its client left would hold a gRPC worker thread:
    # 20 per round. Pools may still grow a little (idle workers linger).
    assert _thread_count(pid) < threads_before + 20, "threads do not pile up across rounds"
    # a deadline ends a stream the same way
    with pytest.raises(grpc.RpcError) as err:
        for _ in daemon.stub.StreamLogs(
            runs_pb2.StreamLogsRequest(run_id=run.id, stage="s", follow=True), timeout=0.5
        ):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while _status(daemon).active_streams > base and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _status(daemon).active_streams == base
    daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id))
