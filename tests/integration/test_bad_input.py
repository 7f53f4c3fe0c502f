"""Bad input gets a clear error and loses nothing."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from conveyor.v1 import pipelines_pb2, runs_pb2
from tests.support.daemon import DaemonProcess
from tests.support.repos import GitRepo


def _rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def _invalid_pipeline(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo], text: str
) -> str:
    repo = pipeline_repo(text)
    err = _rpc_error(lambda: daemon.submit(repo.path))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.details() or ""
    assert daemon.stub.ListRuns(runs_pb2.ListRunsRequest()).runs == [], "nothing was queued"
    return details


def test_malformed_yaml_names_file_and_line(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    details = _invalid_pipeline(
        daemon, pipeline_repo, "name: x\nstages:\n  a:\n    run: [echo, \n  b: {\n"
    )
    assert "conveyor.yaml:" in details
    assert "conveyor.yaml:5" in details or "conveyor.yaml:6" in details


def test_unknown_stage_kind_is_rejected_with_its_line(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    details = _invalid_pipeline(
        daemon, pipeline_repo, "name: x\nstages:\n  a:\n    uses: rnu\n    run: 'true'\n"
    )
    assert "conveyor.yaml:4:" in details
    assert "unknown stage kind 'rnu'" in details and "run" in details


def test_cycle_in_needs_is_rejected(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    details = _invalid_pipeline(
        daemon,
        pipeline_repo,
        "name: x\nstages:\n  a:\n    needs: [c]\n    run: 'true'\n"
        "  b:\n    needs: [a]\n    run: 'true'\n  c:\n    needs: [b]\n    run: 'true'\n",
    )
    assert "cycle" in details and "a -> " in details
    assert "conveyor.yaml:4:" in details


def test_needs_naming_a_missing_stage_is_rejected(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    details = _invalid_pipeline(
        daemon,
        pipeline_repo,
        "name: x\nstages:\n  test:\n    run: 'true'\n"
        "  build:\n    needs: [tset]\n    run: 'true'\n",
    )
    assert "conveyor.yaml:6:" in details
    assert "unknown stage 'tset'" in details and "did you mean 'test'" in details


def test_validate_pipeline_returns_every_diagnostic_with_lines(daemon: DaemonProcess) -> None:
    reply = daemon.stub.ValidatePipeline(
        pipelines_pb2.ValidatePipelineRequest(
            file="ci/pipeline.yaml",
            content="name: x\nstages:\n  a:\n    run: 'true'\n    timeout: soon\n"
            "  b:\n    nedds: [a]\n    run: 'true'\n",
        )
    )
    assert not reply.valid
    found = {(d.line, d.path) for d in reply.diagnostics}
    assert (5, "stages.a.timeout") in found
    assert (7, "stages.b.nedds") in found
    assert all(d.file == "ci/pipeline.yaml" for d in reply.diagnostics)
    ok = daemon.stub.ValidatePipeline(
        pipelines_pb2.ValidatePipelineRequest(
            content="name: y\nstages:\n  b:\n    needs: [a]\n    run: 'true'\n"
            "  a:\n    run: 'true'\n"
        )
    )
    assert ok.valid and list(ok.stage_order) == ["a", "b"] and ok.pipeline_name == "y"


@pytest.mark.parametrize(
    ("request_fields", "needle"),
    [
        ({}, "repository is required"),
        ({"repository": "/tmp"}, "ref is required"),
        ({"repository": "relative/path", "ref": "main"}, "absolute path"),
        ({"repository": "https://example.invalid/x.git", "ref": "main"}, "local paths"),
        ({"repository": "/tmp", "ref": "main", "commit": "xyz"}, "commit"),
        ({"repository": "/tmp", "ref": "--upload-pack=evil"}, "not a valid git ref"),
        ({"repository": "/tmp", "ref": "main", "pipeline_path": "../x.yaml"}, "relative"),
    ],
)
def test_submit_with_missing_or_invalid_fields_is_invalid_argument(
    daemon: DaemonProcess, request_fields: dict[str, str], needle: str
) -> None:
    err = _rpc_error(lambda: daemon.stub.SubmitRun(runs_pb2.SubmitRunRequest(**request_fields)))  # type: ignore[arg-type]
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (err.details() or "")


def test_unknown_and_malformed_run_ids(daemon: DaemonProcess) -> None:
    not_found: list[Callable[[], object]] = [
        lambda: daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id="0123456789abcdef")),
        lambda: daemon.stub.CancelRun(runs_pb2.CancelRunRequest(run_id="0123456789abcdef")),
        lambda: list(daemon.stub.WatchRun(runs_pb2.WatchRunRequest(run_id="0123456789abcdef"))),
        lambda: list(
            daemon.stub.StreamLogs(runs_pb2.StreamLogsRequest(run_id="0123456789abcdef", stage="s"))
        ),
    ]
    for call in not_found:
        err = _rpc_error(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert "not found" in (err.details() or "")
    invalid: list[Callable[[], object]] = [
        lambda: daemon.stub.GetRun(runs_pb2.GetRunRequest()),
        lambda: daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id="../../etc")),
        lambda: daemon.stub.ListRuns(runs_pb2.ListRunsRequest(page_size=10_000)),
        lambda: daemon.stub.ListRuns(runs_pb2.ListRunsRequest(commit="zz")),
        lambda: daemon.stub.ListRuns(runs_pb2.ListRunsRequest(page_token="not-a-token")),
        lambda: list(daemon.stub.WatchRun(runs_pb2.WatchRunRequest(run_id="abc"))),
    ]
    for call in invalid:
        assert _rpc_error(call).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stream_logs_of_unknown_stage_and_bad_offset(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo("name: x\nstages:\n  s:\n    run: echo hi\n")
    run = daemon.wait(daemon.submit(repo.path).id)
    err = _rpc_error(lambda: daemon.logs(run.id, "nope"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "stages: s" in (err.details() or "")
    err = _rpc_error(lambda: daemon.logs(run.id, ""))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = _rpc_error(lambda: daemon.logs(run.id, "s", offset=-1))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_bad_request_leaves_the_daemon_serving(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    for _ in range(3):
        _rpc_error(lambda: daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id="zz")))
    repo = pipeline_repo("name: x\nstages:\n  s:\n    run: 'true'\n")
    assert daemon.wait(daemon.submit(repo.path).id).status == runs_pb2.RUN_STATUS_SUCCEEDED


def test_a_log_offset_past_the_end_of_a_finished_stage_is_out_of_range(
    daemon: DaemonProcess, pipeline_repo: Callable[[str], GitRepo]
) -> None:
    repo = pipeline_repo("name: x\nstages:\n  s:\n    run: echo hi\n")
    run = daemon.wait(daemon.submit(repo.path).id)
    size = run.stages[0].log_size
    assert size > 0
    assert daemon.logs(run.id, "s", offset=size) == b"", "the end itself is fine: nothing more"
    for follow in (False, True):
        err = _rpc_error(lambda follow=follow: daemon.logs(run.id, "s", size + 1, follow))  # type: ignore[misc]
        assert err.code() == grpc.StatusCode.OUT_OF_RANGE
        assert f"offset {size + 1} is past the end of the log of stage 's'" in (err.details() or "")
