"""What the dashboard renders: escaping, ANSI colours, the stage graph's
layout, the timings of attempts."""

from __future__ import annotations

import re

from conveyor.daemon.records import (
    EventKind,
    EventRecord,
    RunRecord,
    RunStatus,
    StageRecord,
    StageStatus,
    TriggerKind,
)
from conveyor.daemon.reports import Finding, StageReport
from conveyor.daemon.reports import TestCaseResult as CaseResult
from conveyor.daemon.web.ansi import AnsiToHtml, palette, stylesheet
from conveyor.daemon.web.html import Markup, escape, html, join, url
from conveyor.daemon.web.pages import dag
from conveyor.daemon.web.pages.gantt import attempts_from_events, gantt
from conveyor.daemon.web.pages.run import parts

HOSTILE = "<img src=x onerror=alert(1)> & \"quotes\" 'too'"


def test_text_is_escaped_unless_it_is_markup() -> None:
    assert escape("<b>") == "&lt;b&gt;"
    assert escape(Markup("<b>")) == "<b>"
    page = html('<p title="{}">{}</p>', HOSTILE, HOSTILE)
    assert "<img" not in page and 'title="&lt;img' in page and "&quot;quotes&quot;" in page
    assert html("{a}{b}", a=Markup("<i>"), b="<i>") == "<i>&lt;i&gt;"
    assert join(["<a>", Markup("<b>")], ", ") == "&lt;a&gt;, <b>"


def test_urls_keep_each_segment_in_its_place() -> None:
    assert url("runs", "abc", "stages", "../../etc") == "/runs/abc/stages/..%2F..%2Fetc"
    assert url("artifacts", "sha256:ab") == "/artifacts/sha256%3Aab"
    assert url("", status="failed", commit="") == "/?status=failed"
    assert url("x", q="<&>") == "/x?q=%3C%26%3E"


def _ansi(*chunks: bytes) -> str:
    converter = AnsiToHtml()
    out = "".join(converter.feed(chunk) for chunk in chunks)
    return out + converter.feed(b"", final=True)


def test_ansi_colours_become_classes_and_text_stays_text() -> None:
    out = _ansi(b"\x1b[1;31m<script>alert(1)</script>\x1b[0m plain")
    assert out == '<span class="a-f1 a-bo">&lt;script&gt;alert(1)&lt;/script&gt;</span> plain'
    assert _ansi(b"\x1b[38;5;208mx\x1b[48;5;17my") == (
        '<span class="a-f208">x</span><span class="a-f208 a-b17">y</span>'
    )
    assert _ansi(b"\x1b[38;2;255;0;0mr\x1b[39m") == '<span class="a-f196">r</span>'
    assert _ansi(b"\x1b[38:2::0:0:255mb") == '<span class="a-f21">b</span>'
    assert _ansi(b"\x1b[94mbright\x1b[22;3;4mu") == (
        '<span class="a-f12">bright</span><span class="a-f12 a-it a-un">u</span>'
    )
    # 38;5;31 is a colour, not 31 (red) after it
    assert _ansi(b"\x1b[38;5;31mc") == '<span class="a-f31">c</span>'


def test_other_escapes_and_controls_are_dropped() -> None:
    link = b"\x1b]8;;http://evil.example\x07click\x1b]8;;\x07"
    assert _ansi(link, b" \x1b[2K\x1b[1A\x1b=bell\x07\x00 cr\r\n") == "click bell cr\n"
    assert _ansi(b"\x1b7\x1b(Bsaved\x1b8") == "saved"


def test_sequences_and_characters_cut_between_chunks_are_joined() -> None:
    converter = AnsiToHtml()
    first = converter.feed(b"a\x1b[3")
    second = converter.feed(b"2mgreen \xe2\x82")
    third = converter.feed(b"\xac\x1b")
    fourth = converter.feed(b"[0m done", final=True)
    assert first == "a"
    assert second == '<span class="a-f2">green </span>'
    assert third == '<span class="a-f2">€</span>'
    assert fourth == " done"


def test_a_reader_starting_mid_log_starts_at_a_line() -> None:
    converter = AnsiToHtml(skip_to_newline=True)
    assert converter.feed(b"half a li") == ""
    assert converter.feed(b"ne\nwhole line\n") == "whole line\n"


def test_the_stylesheet_has_every_palette_colour() -> None:
    css = stylesheet()
    assert len(palette()) == 256
    assert ".a-f255{" in css and ".a-b0{" in css and ".a-bo{" in css
    assert all(re.fullmatch(r"#[0-9a-f]{6}", colour) for colour in palette())


def _stage(name: str, position: int, needs: list[str], **fields: object) -> StageRecord:
    return StageRecord("r" * 12, name, position, "run", needs, **fields)  # type: ignore[arg-type]


def _run(stages: list[StageRecord], **fields: object) -> RunRecord:
    values: dict[str, object] = {
        "id": "0123456789ab",
        "number": 7,
        "pipeline": "web",
        "repository": "/srv/git/app",
        "ref": "main",
        "commit": "a" * 40,
        "pipeline_path": "conveyor.yaml",
        "trigger": TriggerKind.MANUAL,
        "status": RunStatus.RUNNING,
        "created_at": 1000.0,
        "spec_json": "{}",
        "concurrency_group": "",
        "started_at": 1001.0,
        "stages": stages,
    }
    values.update(fields)
    return RunRecord(**values)  # type: ignore[arg-type]


def test_the_graph_puts_each_stage_after_what_it_needs() -> None:
    stages = [
        _stage("checkout", 0, []),
        _stage("lint", 1, ["checkout"]),
        _stage("test", 2, ["checkout"]),
        _stage("docs", 3, []),
        _stage("package", 4, ["lint", "test"]),
    ]
    nodes = dag.layout(stages)
    assert [n.column for n in nodes] == [0, 1, 1, 0, 2]
    assert {(n.column, n.row) for n in nodes} == {(0, 0), (1, 0), (1, 1), (0, 1), (2, 0)}
    svg = dag.svg("0123456789ab", stages)
    assert svg.count("<path ") == 4
    assert 'href="/runs/0123456789ab/stages/package"' in svg


def _event(
    seq: int, time: float, kind: EventKind, stage: str = "", **fields: object
) -> EventRecord:
    return EventRecord("0123456789ab", seq, time, kind, stage=stage, **fields)  # type: ignore[arg-type]


def test_attempts_come_from_the_events() -> None:
    running, retry = EventKind.STAGE_STATUS, EventKind.STAGE_RETRY
    events = [
        _event(1, 1001.0, EventKind.RUN_STATUS, run_status=RunStatus.RUNNING),
        _event(2, 1002.0, running, "test", stage_status=StageStatus.RUNNING, attempt=1),
        _event(3, 1004.0, retry, "test", stage_status=StageStatus.RUNNING, attempt=1),
        _event(4, 1006.0, running, "test", stage_status=StageStatus.RUNNING, attempt=2),
        _event(5, 1007.5, running, "test", stage_status=StageStatus.FAILED, attempt=2),
    ]
    attempts = attempts_from_events(events)["test"]
    assert [(a.number, a.start, a.end, a.outcome) for a in attempts] == [
        (1, 1002.0, 1004.0, "retried"),
        (2, 1006.0, 1007.5, "failed"),
    ]
    stage = _stage(
        "test", 0, [], status=StageStatus.FAILED, attempt=2, started_at=1002.0, finished_at=1007.5
    )
    table = gantt(_run([stage], status=RunStatus.FAILED, finished_at=1008.0), events)
    assert table.count('class="attempt retried"') == 1
    assert table.count('class="attempt failed"') == 1
    assert "5.5s (2 attempts)" in table
    assert 'class="queued"' in table  # the run waited a second in the queue


def test_reasons_reports_and_names_are_escaped_on_the_run_page() -> None:
    report = StageReport(
        kind="test",
        counts={"failed": 1},
        findings=[Finding("ruff", "E1", "error", "a<b>.py", 3, message=HOSTILE, fails_gate=True)],
        tests=[CaseResult("test_<x>", "failed", message=HOSTILE)],
        gate_passed=False,
        gate_reason=HOSTILE,
    )
    stage = _stage(
        "test", 0, [], status=StageStatus.FAILED, reason=HOSTILE, report=report, started_at=1002.0
    )
    run = _run([stage], status=RunStatus.FAILED, reason=HOSTILE, finished_at=1003.0)
    page = "".join(parts(run, []).values())
    assert "<img" not in page
    assert "test_<x>" not in page and "test_&lt;x&gt;" in page
    assert "a<b>.py" not in page and "a&lt;b&gt;.py" in page
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") == 5
