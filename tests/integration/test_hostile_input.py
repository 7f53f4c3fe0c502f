"""A hostile or careless client, and data an older daemon stored, against a
real daemon: every request gets a precise answer, every answer fits in a
message, and the daemon keeps serving."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from conveyor.client import ConveyorError, connect
from conveyor.daemon.store.schema import MIGRATIONS
from conveyor.v1 import pipelines_pb2, runs_pb2, server_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.repos import GitRepo, git

SLEEPER = "name: sleeper\nstages:\n  nap:\n    run: sleep 30\n"
QUICK = "name: quick\nstages:\n  s:\n    run: 'true'\n"
#: What gRPC clients accept by default.
CLIENT_MAX_MESSAGE = 4 * 1024 * 1024


def _rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def _violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "the error carries a google.rpc.Status"
    found: list[tuple[str, str]] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


def _healthy(daemon: DaemonProcess) -> None:
    assert daemon.channel is not None
    health = health_pb2_grpc.HealthStub(daemon.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _all_runs(daemon: DaemonProcess, **request: Any) -> list[runs_pb2.Run]:
    runs: list[runs_pb2.Run] = []
    token = ""
    while True:
        page = daemon.stub.ListRuns(
            runs_pb2.ListRunsRequest(page_token=token, **request), timeout=30
        )
        assert page.ByteSize() < CLIENT_MAX_MESSAGE
        runs += page.runs
        token = page.next_page_token
        if not token:
            return runs


# -- 9.2: oversized fields -------------------------------------------------------


def test_an_oversized_cancel_reason_is_refused_and_the_runs_stay_readable(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    run = daemon.submit(pipeline_repo(SLEEPER).path)
    daemon.wait_for_stage(run.id, "nap")
    for _ in range(2):
        err = _rpc_error(
            lambda: daemon.stub.CancelRun(
                runs_pb2.CancelRunRequest(run_id=run.id, reason="r" * 3_900_000), timeout=30
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == "reason is 3900000 bytes long; the limit is 1024 bytes"
        assert [field for field, _ in _violations(err)] == ["reason"]
    assert daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id)).status == (
        runs_pb2.RUN_STATUS_RUNNING
    )
    reply = daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id, reason="enough"))
    assert reply.run.status == runs_pb2.RUN_STATUS_CANCELLED and reply.run.reason == "enough"
    daemon.stop()
    daemon.start()
    assert daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id)).reason == "enough"
    assert [r.id for r in _all_runs(daemon)] == [run.id]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"repository": "/" + "r" * 5000}, "repository"),
        ({"ref": "x" * 1025}, "ref"),
        ({"pipeline_path": "p" * 1025}, "pipeline_path"),
        ({"idempotency_key": "k" * 257}, "idempotency_key"),
        ({"commit": "a" * 65}, "commit"),
    ],
)
def test_every_oversized_submit_field_is_named_with_its_limit(
    daemon: DaemonProcess, fields: dict[str, str], field: str
) -> None:
    request = {"repository": "/tmp/r", "ref": "main", **fields}
    err = _rpc_error(lambda: daemon.stub.SubmitRun(runs_pb2.SubmitRunRequest(**request)))  # type: ignore[arg-type]
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith(f"{field} is ") and "the limit is" in (
        err.details() or ""
    )
    assert [name for name, _ in _violations(err)] == [field]


def _finished_run(daemon: DaemonProcess, repo: GitRepo) -> runs_pb2.Run:
    return daemon.wait(daemon.submit(repo.path).id)


def _huge_report() -> str:
    text = "m" * 4000
    return json.dumps(
        {
            "kind": "test",
            "counts": {"total": 2000, "failed": 2000},
            "findings": [
                {"tool": "t", "rule": "r", "severity": "high", "file": f"f{i}", "message": text}
                for i in range(1000)
            ],
            "tests": [
                {"name": f"t{i}" + "n" * 3000, "outcome": "failed", "message": text}
                for i in range(1000)
            ],
            "truncated": 5,
            "gate_passed": False,
            "gate_reason": "g" * 100_000,
        }
    )


def test_oversized_data_stored_by_an_older_daemon_is_cut_on_the_way_out(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    run = _finished_run(daemon, pipeline_repo(QUICK))
    daemon.stop()
    huge = "x" * 3_900_000
    with sqlite3.connect(daemon.home / "conveyor.db") as db:
        db.execute("UPDATE runs SET reason = ?, ref = ?", (huge, huge))
        db.execute("UPDATE stages SET reason = ?, report_json = ?", (huge, _huge_report()))
        db.execute("UPDATE events SET message = ?", (huge,))
    daemon.start()
    got = daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id), timeout=30)
    assert got.ByteSize() < CLIENT_MAX_MESSAGE
    assert got.reason.startswith("xxx") and got.reason.endswith("more characters)")
    report = stage(got, "s").report
    assert report.counts["total"] == 2000 and not report.gate_passed
    assert len(report.findings) + len(report.tests) + report.truncated == 2005
    assert report.truncated > 5, "the lists were cut to fit, and the cut items counted"
    (listed,) = _all_runs(daemon)
    listed_report = stage(listed, "s").report
    assert not listed_report.findings and not listed_report.tests, "ListRuns summarises reports"
    assert listed_report.truncated == 2005 and listed_report.counts["failed"] == 2000
    events = list(daemon.events(run.id))
    assert events and all(len(e.message) < 5000 for e in events)
    reply = daemon.stub.ValidatePipeline(pipelines_pb2.ValidatePipelineRequest(content=QUICK))
    assert reply.valid


def test_list_runs_pages_by_size_as_well_as_count(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    run = _finished_run(daemon, pipeline_repo(QUICK))
    daemon.stop()
    # runs with 300 stages of 3000-character reasons: ~1 MB each
    with sqlite3.connect(daemon.home / "conveyor.db") as db:
        db.row_factory = sqlite3.Row
        row = dict(db.execute("SELECT * FROM runs WHERE id = ?", (run.id,)).fetchone())
        stage_row = dict(db.execute("SELECT * FROM stages WHERE run_id = ?", (run.id,)).fetchone())
        ids = [f"{int(run.id, 16) + n:020x}" for n in range(1, 7)]
        for number, run_id in enumerate(ids, start=2):
            db.execute(
                f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                [*{**row, "id": run_id, "number": number}.values()],
            )
            db.executemany(
                f"INSERT INTO stages ({', '.join(stage_row)})"
                f" VALUES ({', '.join('?' * len(stage_row))})",
                [
                    [
                        *{
                            **stage_row,
                            "run_id": run_id,
                            "name": f"s{i}",
                            "position": i,
                            "reason": "r" * 3000,
                        }.values()
                    ]
                    for i in range(300)
                ],
            )
    daemon.start()
    first = daemon.stub.ListRuns(runs_pb2.ListRunsRequest(page_size=50), timeout=30)
    assert 1 <= len(first.runs) < 7 and first.next_page_token == first.runs[-1].id
    runs = _all_runs(daemon)
    assert [r.id for r in runs] == [*reversed(ids), run.id], "every run once, newest first"


# -- 9.3: streams ------------------------------------------------------------------


def test_streams_beyond_max_streams_are_refused_and_unary_calls_still_answer(
    daemon_home: Path, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    daemon = DaemonProcess(
        daemon_home, args=["--kill-grace", "1", "--grpc-workers", "8", "--max-streams", "4"]
    ).start()
    try:
        run = daemon.submit(pipeline_repo(SLEEPER).path)
        daemon.wait_for_stage(run.id, "nap")
        followers: list[Any] = []
        for _ in range(4):
            call: Any = daemon.stub.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id), timeout=60)
            next(call)  # the stream is open on the daemon
            followers.append(call)
        logs: Any = daemon.stub.StreamLogs(
            runs_pb2.StreamLogsRequest(run_id=run.id, stage="nap", follow=True), timeout=10
        )
        err = _rpc_error(lambda: next(logs))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams" in (err.details() or "")
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
        assert status is not None
        retry = error_details_pb2.RetryInfo()
        assert any(detail.Unpack(retry) for detail in status.details)
        assert retry.retry_delay.seconds >= 1
        _healthy(daemon)
        got = daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id), timeout=5)
        assert got.status == runs_pb2.RUN_STATUS_RUNNING
        assert daemon.stub.GetServerStatus(server_pb2.GetServerStatusRequest(), timeout=5).version
        daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id), timeout=30)
        for call in followers:
            assert [e.run_status for e in call][-1] == runs_pb2.RUN_STATUS_CANCELLED
    finally:
        daemon.stop()


# -- 9.5: cancel racing the end of a run --------------------------------------


def test_an_accepted_cancel_always_ends_the_run_cancelled(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(QUICK)
    seed = random.randrange(1 << 32)
    print(f"cancel race seed {seed}")
    rng = random.Random(seed)
    accepted = refused = 0
    deadline = time.monotonic() + 240
    for trial in range(300):
        assert time.monotonic() < deadline, f"only {trial} trials in time"
        run = daemon.submit(repo.path)
        time.sleep(rng.uniform(0, 0.015))  # spread the cancels over the run's life
        try:
            reply = daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id), timeout=30)
        except grpc.RpcError as err:
            refused += 1
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
            final = daemon.wait(run.id)
            name = runs_pb2.RunStatus.Name(final.status).removeprefix("RUN_STATUS_").lower()
            assert f"already finished ({name})" in (err.details() or ""), (trial, err.details())
            continue
        accepted += 1
        assert reply.run.status in (runs_pb2.RUN_STATUS_CANCELLED, runs_pb2.RUN_STATUS_RUNNING)
        final = daemon.wait(run.id)
        assert final.status == runs_pb2.RUN_STATUS_CANCELLED, (
            f"trial {trial} (seed {seed}): cancel answered OK, run ended"
            f" {runs_pb2.RunStatus.Name(final.status)}"
        )
    print(f"{accepted} cancels accepted, {refused} refused")


# -- 9.8: status codes -------------------------------------------------------------


def _submit_error(daemon: DaemonProcess, repo: Path | str, **fields: Any) -> grpc.RpcError:
    request = runs_pb2.SubmitRunRequest(repository=str(repo), ref="main", **fields)
    return _rpc_error(lambda: daemon.stub.SubmitRun(request, timeout=30))


def test_an_unknown_trigger_is_invalid_argument(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    err = _submit_error(daemon, pipeline_repo(QUICK).path, trigger=99)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "trigger: unknown TriggerKind value 99" in (err.details() or "")
    assert _violations(err)[0][0] == "trigger"


@pytest.mark.parametrize(
    ("pipeline", "needle"),
    [
        (
            "name: x\nstages:\n  s:\n    run: 'true'\n    timeout: " + "1" * 400 + "\n",
            "longer than the limit of 30 days",
        ),
        (
            "name: x\nstages:\n  s:\n    run: 'true'\n    timeout: 99999999999999h\n",
            "longer than the limit of 30 days",
        ),
        ('name: x\nenv:\n  "A=B": x\nstages:\n  s:\n    run: "true"\n', "must not contain '='"),
        ('name: x\nenv:\n  "A\\0": x\nstages:\n  s:\n    run: "true"\n', "NUL"),
        ('name: x\nstages:\n  s:\n    env:\n      A: "a\\0b"\n    run: "true"\n', "NUL"),
        ('name: x\nstages:\n  s:\n    run: "echo a\\0b"\n', "NUL"),
    ],
)
def test_pipeline_values_a_process_cannot_take_are_invalid(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], pipeline: str, needle: str
) -> None:
    err = _submit_error(daemon, pipeline_repo(pipeline).path)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert needle in (err.details() or "")
    reply = daemon.stub.ValidatePipeline(pipelines_pb2.ValidatePipelineRequest(content=pipeline))
    assert not reply.valid and any(needle in d.message for d in reply.diagnostics)
    assert daemon.stub.ListRuns(runs_pb2.ListRunsRequest()).runs == [], "nothing was queued"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"repository": "/tmp/" + "d" * 300}, "repository"),
        ({"pipeline_path": "ci/" + "p" * 300 + ".yaml"}, "pipeline_path"),
        ({"pipeline_path": "conveyor.yaml\nHEAD"}, "pipeline_path"),
        ({"pipeline_path": "conveyor.yaml\x00"}, "pipeline_path"),
        ({"repository": "/tmp/a\x00b"}, "repository"),
    ],
)
def test_paths_the_system_cannot_take_are_invalid_argument(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], fields: Any, field: str
) -> None:
    fields = {"repository": str(pipeline_repo(QUICK).path), **fields}
    err = _rpc_error(
        lambda: daemon.stub.SubmitRun(runs_pb2.SubmitRunRequest(ref="main", **fields), timeout=30)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert [name for name, _ in _violations(err)] == [field]


def test_a_repository_git_refuses_says_why(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(QUICK)
    git("config", "core.repositoryformatversion", "99", cwd=repo.path)
    err = _submit_error(daemon, repo.path)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
    details = err.details() or ""
    assert f"git cannot read repository {repo.path}" in details
    assert "Expected git repo version <= 1, found 99" in details


def test_invalid_utf8_and_garbage_requests_are_invalid_argument(daemon: DaemonProcess) -> None:
    assert daemon.channel is not None
    good = runs_pb2.CancelRunRequest(run_id="0123456789abcdef", reason="xyz").SerializeToString()
    call: Any = daemon.channel.unary_unary("/conveyor.v1.ConveyorService/CancelRun", None, None)
    for raw in (good.replace(b"xyz", b"x\xffz"), good[:-2], b"\xff" * 7):
        err = _rpc_error(lambda raw=raw: call(raw, timeout=10))  # type: ignore[misc]
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.details() or "").startswith("the request could not be decoded")
    _healthy(daemon)


def test_an_error_message_too_long_for_a_trailer_is_cut_not_lost(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    stages = "".join(
        f"  stage-{i:03d}-{'n' * 80}:\n    uses: no-such-kind-{'k' * 150}\n" for i in range(150)
    )
    err = _submit_error(daemon, pipeline_repo(f"name: many\nstages:\n{stages}").path)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.details() or ""
    assert details.startswith("invalid pipeline file:") and "(message cut: " in details


def test_the_python_client_shows_the_field_violation(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    with connect(daemon.address) as client, pytest.raises(ConveyorError) as info:
        client.get_run("zz" * 30)
    err = info.value
    assert err.code_name == "INVALID_ARGUMENT"
    assert [(v.field, "60 bytes" in v.description) for v in err.field_violations] == [
        ("run_id", True)
    ]
    assert "run_id" in str(err)


# -- 9.10: idempotency keys ---------------------------------------------------------


def test_the_same_idempotency_key_in_a_fork_is_another_run(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], tmp_path: Path
) -> None:
    origin = pipeline_repo(QUICK)
    fork = tmp_path / "fork"
    subprocess.run(["git", "clone", "-q", str(origin.path), str(fork)], check=True)
    commit = git("rev-parse", "HEAD", cwd=origin.path)
    key = f"push:refs/heads/main:{commit}"
    first = daemon.stub.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=str(origin.path), ref="main", idempotency_key=key)
    )
    forked = daemon.stub.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=str(fork), ref="main", idempotency_key=key)
    )
    again = daemon.stub.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=str(origin.path), ref="main", idempotency_key=key)
    )
    assert first.created and forked.created and not again.created
    assert forked.run.id != first.run.id and forked.run.repository == str(fork)
    assert again.run.id == first.run.id
    assert daemon.wait(forked.run.id).status == runs_pb2.RUN_STATUS_SUCCEEDED


def test_idempotency_keys_stored_before_scoping_keep_working(
    daemon_home: Path, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(QUICK)
    with sqlite3.connect(daemon_home / "conveyor.db", isolation_level=None) as db:
        for number, script in enumerate(MIGRATIONS[:4], start=1):
            db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        db.execute(
            "INSERT INTO runs (id, number, pipeline, repository, ref, commit_sha, pipeline_path,"
            " trigger, status, created_at, spec_json, concurrency_group)"
            " VALUES ('0123456789abcdef0123', 1, 'quick', ?, 'main', ?, 'conveyor.yaml',"
            " 'manual', 'succeeded', 1.0, '{}', '')",
            (str(repo.path), "a" * 40),
        )
        db.execute(
            "INSERT INTO idempotency_keys (key, run_id, created_at)"
            " VALUES ('release-1', '0123456789abcdef0123', 1.0)"
        )
    daemon = DaemonProcess(daemon_home).start()
    try:
        reply = daemon.stub.SubmitRun(
            runs_pb2.SubmitRunRequest(
                repository=str(repo.path), ref="main", idempotency_key="release-1"
            )
        )
        assert not reply.created and reply.run.id == "0123456789abcdef0123"
    finally:
        daemon.stop()
