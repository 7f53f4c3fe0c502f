"""Tests for the CLI's formatting helpers and the watch view."""

from __future__ import annotations

import io
import json
import time

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from conveyor.client import render
from conveyor.client.watch import (
    ASCII_SYMBOLS,
    LineRenderer,
    RunView,
    TtyRenderer,
    event_line,
    summary,
)
from conveyor.v1 import pipelines_pb2, runs_pb2, server_pb2

T0 = 1_700_000_000


def ts(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def local(hh: int, mm: int, ss: int) -> float:
    """Seconds since the epoch of today's hh:mm:ss, local time."""
    now = time.localtime()
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, hh, mm, ss, 0, 0, -1))


def make_run() -> runs_pb2.Run:
    return runs_pb2.Run(
        id="r-1",
        number=7,
        pipeline="ci",
        repository="/srv/git/app.git",
        ref="main",
        commit="0123456789abcdef0123456789abcdef01234567",
        pipeline_path="conveyor.yaml",
        trigger=runs_pb2.TRIGGER_KIND_PUSH,
        status=runs_pb2.RUN_STATUS_FAILED,
        created_at=ts(T0),
        started_at=ts(T0 + 1),
        finished_at=ts(T0 + 185),
        stages=[
            runs_pb2.Stage(
                name="build",
                status=runs_pb2.STAGE_STATUS_SUCCEEDED,
                attempt=1,
                exit_code=0,
                started_at=ts(T0 + 1),
                finished_at=ts(T0 + 2.2),
            ),
            runs_pb2.Stage(
                name="test",
                needs=["build"],
                status=runs_pb2.STAGE_STATUS_FAILED,
                attempt=2,
                exit_code=3,
                started_at=ts(T0 + 3),
                finished_at=ts(T0 + 185),
                reason="exit code 3",
            ),
            runs_pb2.Stage(
                name="deploy",
                needs=["build", "test"],
                status=runs_pb2.STAGE_STATUS_SKIPPED,
            ),
        ],
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0.0s"),
        (1.23, "1.2s"),
        (-3, "0.0s"),
        (59.4, "59.4s"),
        (59.97, "1m00s"),
        (184, "3m04s"),
        (3599.4, "59m59s"),
        (3725, "1h02m"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert render.format_duration(seconds) == text


def test_enum_names() -> None:
    assert render.run_status_name(runs_pb2.RUN_STATUS_SUCCEEDED) == "succeeded"
    assert render.run_status_name(runs_pb2.RUN_STATUS_TIMED_OUT) == "timed_out"
    assert render.stage_status_name(runs_pb2.STAGE_STATUS_SKIPPED) == "skipped"
    assert render.trigger_name(runs_pb2.TRIGGER_KIND_PUSH) == "push"
    assert render.run_status_name(99) == "99"
    assert render.run_status_value("timed_out") == runs_pb2.RUN_STATUS_TIMED_OUT
    assert "queued" in render.run_status_choices()
    assert "unspecified" not in render.run_status_choices()


def test_timestamps() -> None:
    assert render.ts_seconds(Timestamp()) is None
    assert render.format_time(Timestamp()) == "-"
    assert render.ts_seconds(ts(T0 + 0.5)) == pytest.approx(T0 + 0.5)
    assert render.ts_span(ts(T0), Timestamp(), now=T0 + 4) == pytest.approx(4)
    assert render.ts_span(Timestamp(), Timestamp()) is None
    assert render.format_clock(local(12, 0, 1)) == "12:00:01"


def test_table_aligns_columns() -> None:
    lines = render.table(["A", "BB", "C"], [["xxx", "y", "last"], ["", "", ""]])
    assert lines == ["A    BB  C", "xxx  y   last", ""]


def test_runs_table() -> None:
    header, row = render.runs_table([make_run()])
    assert header.split() == [
        "ID",
        "#",
        "PIPELINE",
        "STATUS",
        "REF",
        "COMMIT",
        "CREATED",
        "DURATION",
    ]
    cells = row.split()
    assert cells[:6] == ["r-1", "#7", "ci", "failed", "main", "0123456789"]
    assert cells[-1] == "3m04s"


def test_run_detail_lists_stages() -> None:
    lines = render.run_detail(make_run())
    assert lines[0] == "run r-1  #7 ci"
    text = "\n".join(lines)
    assert "trigger:       push" in text
    test_line = next(line for line in lines if line.startswith("test "))
    assert test_line.split()[:5] == ["test", "failed", "2", "3", "3m02s"]
    assert test_line.endswith("exit code 3")
    deploy_line = next(line for line in lines if line.startswith("deploy "))
    assert deploy_line.split() == ["deploy", "skipped", "-", "-", "-"]


def test_json_keeps_proto_names_and_integers() -> None:
    data = json.loads(render.to_json([make_run()]))
    assert isinstance(data, list)
    assert data[0]["pipeline_path"] == "conveyor.yaml"
    assert data[0]["number"] == 7
    assert data[0]["status"] == "RUN_STATUS_FAILED"
    assert data[0]["stages"][0]["exit_code"] == 0
    assert "exit_code" not in data[0]["stages"][2]


def test_validation_output() -> None:
    invalid = pipelines_pb2.ValidatePipelineResponse(
        valid=False,
        diagnostics=[
            pipelines_pb2.Diagnostic(
                file="ci.yaml",
                line=4,
                column=7,
                path="stages.test.needs[0]",
                message="unknown stage 'biuld'",
                severity=pipelines_pb2.SEVERITY_ERROR,
            ),
            pipelines_pb2.Diagnostic(message="empty file"),
        ],
    )
    assert render.validation(invalid, "ci.yaml") == [
        "ci.yaml:4:7: stages.test.needs[0]: unknown stage 'biuld'",
        "ci.yaml: empty file",
    ]
    valid = pipelines_pb2.ValidatePipelineResponse(valid=True, stage_order=["a", "b", "c"])
    assert render.validation(valid, "conveyor.yaml") == ["conveyor.yaml: valid (3 stages: a, b, c)"]


def test_plugins_table_shows_errors() -> None:
    plugins = [
        server_pb2.Plugin(
            name="run",
            distribution="conveyor-plugins",
            version="0.1.0",
            hooks=["conveyor_stage_kinds"],
            provides=["stage kind: run"],
        ),
        server_pb2.Plugin(name="broken", distribution="x", version="1", error="ImportError: y"),
    ]
    lines = render.plugins_table(plugins)
    assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "PROVIDES", "HOOKS"]
    assert "stage kind: run" in lines[1]
    assert lines[2].startswith("broken")
    assert lines[3] == "  error: ImportError: y"


def test_submitted_line() -> None:
    response = runs_pb2.SubmitRunResponse(run=make_run(), created=True)
    assert render.submitted(response) == "run r-1 #7 ci submitted: main at commit 0123456789"


# -- watch view ------------------------------------------------------------


def stage_event(seq: int, at: float, stage: str, status: int, **kw: object) -> runs_pb2.RunEvent:
    return runs_pb2.RunEvent(
        run_id="r-1",
        seq=seq,
        time=ts(at),
        kind=runs_pb2.RUN_EVENT_KIND_STAGE_STATUS,
        stage=stage,
        stage_status=status,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def pending_run() -> runs_pb2.Run:
    run = make_run()
    run.status = runs_pb2.RUN_STATUS_QUEUED
    run.ClearField("started_at")
    run.ClearField("finished_at")
    for stage in run.stages:
        stage.status = runs_pb2.STAGE_STATUS_PENDING
        stage.attempt = 0
        stage.reason = ""
        for name in ("exit_code", "started_at", "finished_at"):
            stage.ClearField(name)
    return run


def test_run_view_applies_events() -> None:
    view = RunView.from_run(pending_run())
    start = local(12, 0, 1)
    running = stage_event(1, start, "build", runs_pb2.STAGE_STATUS_RUNNING, attempt=1)
    view.apply(running)
    assert event_line(view, running) == "12:00:01 build running (attempt 1)"
    done = stage_event(
        2, start + 4, "build", runs_pb2.STAGE_STATUS_SUCCEEDED, attempt=1, exit_code=0
    )
    view.apply(done)
    assert event_line(view, done) == "12:00:05 build succeeded (attempt 1, exit 0) in 4.0s"
    build = view.stages["build"]
    assert (build.status, build.exit_code, build.finished) == (
        runs_pb2.STAGE_STATUS_SUCCEEDED,
        0,
        start + 4,
    )
    retry = runs_pb2.RunEvent(
        seq=3,
        time=ts(start + 5),
        kind=runs_pb2.RUN_EVENT_KIND_STAGE_RETRY,
        stage="test",
        attempt=2,
        message="exit code 1",
    )
    view.apply(retry)
    assert event_line(view, retry) == "12:00:06 test retrying (attempt 2): exit code 1"
    assert view.stages["test"].attempt == 2
    finished = runs_pb2.RunEvent(
        seq=4,
        time=ts(start + 10),
        kind=runs_pb2.RUN_EVENT_KIND_RUN_STATUS,
        run_status=runs_pb2.RUN_STATUS_SUCCEEDED,
    )
    view.apply(finished)
    assert view.status == runs_pb2.RUN_STATUS_SUCCEEDED
    assert view.finished == start + 10


def test_stage_lines_show_needs_and_times() -> None:
    view = RunView.from_run(make_run())
    lines = view.stage_lines(ASCII_SYMBOLS, "<-")
    assert lines[0].split() == ["+", "build", "succeeded", "1.2s"]
    assert lines[1].startswith("  x test ")
    assert "attempt 2" in lines[1]
    assert lines[1].endswith("<- build  (exit code 3)")
    assert lines[2].split() == ["~", "deploy", "skipped", "<-", "build,", "test"]


def test_summary() -> None:
    lines = summary(make_run())
    assert lines[0] == "run r-1 #7 ci failed in 3m04s"
    assert lines[1].split() == ["build", "succeeded", "1.2s"]
    assert lines[2].split()[-3:] == ["exit", "code", "3"]


def test_tty_renderer_redraws_in_place() -> None:
    out = io.StringIO()
    renderer = TtyRenderer(out)
    view = RunView.from_run(make_run())
    renderer.draw(view)
    first = out.getvalue()
    assert first.startswith("\x1b[2Krun r-1 #7 ci")  # no cursor-up the first time
    assert first.count("\n") == 4
    renderer.draw(view)
    assert out.getvalue()[len(first) :].startswith("\x1b[4A\r\x1b[2K")


def test_line_renderer_prints_events() -> None:
    out = io.StringIO()
    renderer = LineRenderer(out)
    view = RunView.from_run(pending_run())
    renderer.start(view)
    event = stage_event(1, local(9, 30, 0), "build", runs_pb2.STAGE_STATUS_RUNNING, attempt=1)
    view.apply(event)
    renderer.event(view, event, live=False)
    assert out.getvalue().splitlines() == [
        "watching run r-1 #7 ci (stages: build, test, deploy)",
        "09:30:00 build running (attempt 1)",
    ]
