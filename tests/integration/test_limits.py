"""Pipeline size limits, and a huge pipeline file that freezes nothing
(issue 9, item 1), through a real daemon."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.v1 import pipelines_pb2, runs_pb2
from tests.support.daemon import DaemonProcess
from tests.support.repos import GitRepo

LIMITS = ["--max-stages", "5", "--max-needs", "2", "--max-diagnostics", "3"]


@pytest.fixture(scope="module")
def limited() -> Iterator[DaemonProcess]:
    """One daemon for the module, with small limits: 5 stages, 2 needs, 3 diagnostics."""
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))
    daemon = DaemonProcess(home, args=LIMITS).start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)


def chain(stages: int, *, run: bool = True) -> str:
    lines = ["name: chain", "stages:"]
    for i in range(stages):
        lines.append(f"  s{i}:")
        if run:
            lines.append("    run: 'true'")
        if i:
            lines.append(f"    needs: [s{i - 1}]")
    return "\n".join(lines) + "\n"


def validate(daemon: DaemonProcess, text: str, timeout: float = 60) -> object:
    return daemon.stub.ValidatePipeline(
        pipelines_pb2.ValidatePipelineRequest(content=text), timeout=timeout
    )


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return err.value


def test_the_daemon_answers_while_it_validates_a_huge_pipeline(limited: DaemonProcess) -> None:
    """A file of 24000 chained stages (under the 1 MiB limit on files) takes
    seconds to parse; it is parsed off the loop, so health checks and reads
    answer meanwhile."""
    text = chain(24_000, run=False)
    assert 600_000 < len(text.encode()) < 1 << 20
    assert limited.channel is not None
    health = health_pb2_grpc.HealthStub(limited.channel)
    outcome: list[grpc.RpcError] = []
    window: list[float] = []

    def huge() -> None:
        window.append(time.monotonic())
        try:
            validate(limited, text, timeout=120)
        except grpc.RpcError as exc:
            outcome.append(exc)
        window.append(time.monotonic())

    worker = threading.Thread(target=huge)
    worker.start()
    answered: list[float] = []
    while worker.is_alive():
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as missing:
            limited.stub.GetRun(runs_pb2.GetRunRequest(run_id="0" * 20), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        answered.append(time.monotonic())
    worker.join()
    start, end = window
    middle = [t for t in answered if start + (end - start) / 4 < t < end - (end - start) / 4]
    assert middle, "health checks and GetRun answered while the validation was in flight"
    (error,) = outcome
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the pipeline has 24000 stages; the limit is 5 (setting max_stages)" in (
        error.details() or ""
    )


def test_too_many_stages_or_needs_is_invalid_argument_naming_the_limit(
    limited: DaemonProcess,
) -> None:
    err = refused(lambda: validate(limited, chain(6)))
    assert err.details() == (
        "conveyor.yaml:2:1: stages: the pipeline has 6 stages; the limit is 5 (setting max_stages)"
    )
    needy = "name: x\nstages:\n  a: {}\n  b: {}\n  c: {}\n  d: {needs: [a, b, c]}\n"
    err = refused(lambda: validate(limited, needy))
    assert "stage 'd' needs 3 stages; the limit is 2 (setting max_needs)" in (err.details() or "")
    reply = validate(limited, chain(5))
    assert isinstance(reply, pipelines_pb2.ValidatePipelineResponse)
    assert reply.valid and list(reply.stage_order) == [f"s{i}" for i in range(5)]


def test_submitting_a_pipeline_over_a_limit_is_refused_and_stores_nothing(
    limited: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(chain(6))
    err = refused(lambda: limited.submit(repo.path))
    assert "the pipeline has 6 stages; the limit is 5 (setting max_stages)" in (err.details() or "")
    assert not limited.stub.ListRuns(runs_pb2.ListRunsRequest(pipeline="chain")).runs


def test_diagnostics_beyond_the_limit_are_counted_not_sent(limited: DaemonProcess) -> None:
    text = "name: x\nstages:\n" + "".join(
        f"  s{i}: {{run: x, needs: [nope{i}]}}\n" for i in range(5)
    )
    reply = validate(limited, text)
    assert isinstance(reply, pipelines_pb2.ValidatePipelineResponse)
    assert not reply.valid
    assert [d.line for d in reply.diagnostics[:3]] == [3, 4, 5]
    assert reply.diagnostics[3].message == (
        "2 more problem(s) not shown; at most 3 are reported (setting max_diagnostics)"
    )
    assert len(reply.diagnostics) == 4
