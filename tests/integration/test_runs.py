"""Runs end to end through a real daemon: a DAG sharing its workspace,
the stage environment, idempotency, listing, refs and watching.

The tests share one daemon (``shared_daemon``): each reads back only the
runs of its own pipelines. The scheduler's insides (parallelism, skips,
retries, timeouts, concurrency groups, draining) are tested in-process in
``tests/unit/test_scheduler.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess
from tests.support.repos import GitRepo, git


@pytest.fixture
def daemon(shared_daemon: DaemonProcess) -> DaemonProcess:
    return shared_daemon


DIAMOND = """
name: diamond
stages:
  a:
    run: echo a > a.txt
  b:
    needs: [a]
    run: cat a.txt && echo b
  c:
    needs: [a]
    run: echo c
  d:
    needs: [b, c]
    run: echo d
"""


def test_diamond_dag_runs_every_stage_after_its_needs(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(DIAMOND)
    run = daemon.wait(daemon.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
    assert [s.name for s in run.stages] == ["a", "b", "c", "d"]
    for s in run.stages:
        assert s.status == runs_pb2.STAGE_STATUS_SUCCEEDED
        assert s.exit_code == 0
    starts = {s.name: s.started_at.ToNanoseconds() for s in run.stages}
    ends = {s.name: s.finished_at.ToNanoseconds() for s in run.stages}
    assert starts["b"] >= ends["a"] and starts["c"] >= ends["a"]
    assert starts["d"] >= max(ends["b"], ends["c"])
    assert b"a\nb\n" in daemon.logs(run.id, "b")


def test_stage_environment_names_the_run(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(
        """
name: envs
env: {GREETING: hello, LEVEL: 1}
stages:
  show:
    env: {LEVEL: 2}
    run: echo "$GREETING $LEVEL $CONVEYOR_PIPELINE $CONVEYOR_STAGE $CONVEYOR_COMMIT $CI"
"""
    )
    run = daemon.wait(daemon.submit(repo.path).id)
    log = daemon.logs(run.id, "show").decode()
    assert f"hello 2 envs show {run.commit} true" in log


def test_idempotency_key_creates_one_run(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo("name: once\nstages:\n  s:\n    run: 'true'\n")
    first = daemon.stub.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=str(repo.path), ref="main", idempotency_key="k-1")
    )
    second = daemon.stub.SubmitRun(
        runs_pb2.SubmitRunRequest(repository=str(repo.path), ref="main", idempotency_key="k-1")
    )
    assert first.created and not second.created
    assert first.run.id == second.run.id
    daemon.wait(first.run.id)
    listed = daemon.stub.ListRuns(runs_pb2.ListRunsRequest(pipeline="once"))
    assert [r.id for r in listed.runs] == [first.run.id]


def test_list_runs_filters_and_paginates(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo("name: many\nstages:\n  s:\n    run: 'true'\n")
    other = pipeline_repo("name: other\nstages:\n  s:\n    run: 'false'\n")
    ids = [daemon.submit(repo.path).id for _ in range(5)]
    failed = daemon.submit(other.path).id
    for run_id in [*ids, failed]:
        daemon.wait(run_id)
    page1 = daemon.stub.ListRuns(runs_pb2.ListRunsRequest(pipeline="many", page_size=2))
    page2 = daemon.stub.ListRuns(
        runs_pb2.ListRunsRequest(pipeline="many", page_size=2, page_token=page1.next_page_token)
    )
    page3 = daemon.stub.ListRuns(
        runs_pb2.ListRunsRequest(pipeline="many", page_size=2, page_token=page2.next_page_token)
    )
    seen = [r.id for r in [*page1.runs, *page2.runs, *page3.runs]]
    assert seen == list(reversed(ids))
    assert page3.next_page_token == ""
    assert [r.number for r in page1.runs] == [5, 4]
    failed_of_other = runs_pb2.ListRunsRequest(pipeline="other", status=runs_pb2.RUN_STATUS_FAILED)
    assert [r.id for r in daemon.stub.ListRuns(failed_of_other).runs] == [failed]
    succeeded = runs_pb2.ListRunsRequest(pipeline="other", status=runs_pb2.RUN_STATUS_SUCCEEDED)
    assert not daemon.stub.ListRuns(succeeded).runs
    other_commit = daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=failed)).commit
    by_commit = daemon.stub.ListRuns(runs_pb2.ListRunsRequest(commit=other_commit[:8]))
    assert [r.id for r in by_commit.runs] == [failed]


def test_submit_by_tag_and_by_commit_runs_that_exact_commit(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo("name: pinned\nstages:\n  s:\n    run: git log -1 --format=%H\n")
    first = repo.commit({"x": "1"})
    git("tag", "v1", cwd=repo.path)
    repo.commit({"x": "2"})
    by_tag = daemon.wait(daemon.submit(repo.path, ref="v1").id)
    assert by_tag.commit == first
    assert daemon.logs(by_tag.id, "s").strip().endswith(first.encode())
    by_commit = daemon.wait(daemon.submit(repo.path, ref=first[:10]).id)
    assert by_commit.commit == first


def test_unknown_ref_and_missing_repository_are_not_found(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo("name: x\nstages:\n  s:\n    run: 'true'\n")
    with pytest.raises(grpc.RpcError) as err:
        daemon.submit(repo.path, ref="no-such-branch")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-branch" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        daemon.submit(repo.path.parent / "nowhere")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "not a git repository" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        daemon.submit(repo.path, pipeline_path="ci/other.yaml")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ci/other.yaml" in (err.value.details() or "")


def test_watch_resumes_after_a_sequence_number(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo(DIAMOND)
    run = daemon.wait(daemon.submit(repo.path).id)
    everything = list(daemon.events(run.id))
    assert [e.seq for e in everything] == list(range(1, run.last_event_seq + 1))
    assert everything[0].run_status == runs_pb2.RUN_STATUS_QUEUED
    assert everything[-1].run_status == runs_pb2.RUN_STATUS_SUCCEEDED
    resumed = list(daemon.events(run.id, after_seq=5))
    assert resumed == everything[5:]
    assert list(daemon.events(run.id, after_seq=run.last_event_seq)) == []
