"""What reaches the user's terminal: server strings escaped, the colour policy,
stage logs filtered of escape sequences (issues 8.6 and 9.9)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from conveyor.client import render
from conveyor.client.logs import stream_stage
from conveyor.client.terminal import LogFilter, paint, printable, use_color
from conveyor.client.timeline import timeline
from conveyor.client.watch import (
    ASCII_SYMBOLS,
    LineRenderer,
    RunView,
    TtyRenderer,
    event_line,
    summary,
)
from conveyor.v1 import pipelines_pb2, runs_pb2, server_pb2

# What a hostile pipeline, tool or API client may put in a string: clear the
# screen, set the window title, move the cursor, ring the bell, a C1 CSI, a
# carriage return that hides what came before, and a right-to-left override.
HOSTILE = "a\x1b[2J\x1b[H\x1b]0;pwned\x07\x9b1A\rb\u202ec\nd\x00\x7f"
# Anything that acts on a terminal: C0 (even tab and newline, in one-line
# fields), DEL, C1, and bidirectional formatting characters.
ACTING = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def acting(lines: list[str] | str) -> list[str]:
    """The lines that hold a character that would act on a terminal."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    return [line for line in text.split("\n") if ACTING.search(line)]


# -- printable --------------------------------------------------------------------


def test_printable_writes_control_characters_out() -> None:
    assert printable(HOSTILE) == (
        "a\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07\\x9b1A\\rb\\u202ec\\nd\\x00\\x7f"
    )
    assert printable("tab\there") == "tab\\there"
    assert printable("line one\nline\ttwo\x1b[K", multiline=True) == ("line one\nline\ttwo\\x1b[K")


def test_printable_leaves_text_alone_and_is_idempotent() -> None:
    text = "héllo wörld ✓ 日本 C:\\path\\x1b 'quoted' \"double\""
    assert printable(text) == text
    once = printable(HOSTILE)
    assert printable(once) == once


# -- colour policy ----------------------------------------------------------------


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("mode", "tty", "env", "expected"),
    [
        ("auto", True, {}, True),
        ("auto", False, {}, False),
        ("auto", True, {"NO_COLOR": "1"}, False),
        ("auto", True, {"NO_COLOR": ""}, True),  # no-color.org: set and not empty
        ("auto", True, {"TERM": "dumb"}, False),
        ("always", False, {"NO_COLOR": "1"}, True),  # the command line wins
        ("never", True, {}, False),
    ],
)
def test_colour_policy(
    monkeypatch: pytest.MonkeyPatch, mode: str, tty: bool, env: dict[str, str], expected: bool
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert use_color(mode, Stream(tty)) is expected


def test_paint_only_with_colour() -> None:
    assert paint("failed", "31", True) == "\x1b[31mfailed\x1b[0m"
    assert paint("failed", "31", False) == "failed"
    assert paint("pending", None, True) == "pending"


# -- stage logs -------------------------------------------------------------------

LOG = (
    b"\x1b[1m$ pytest\x1b[0m\n"  # the daemon's own command echo: bold
    b"\x1b]0;owned\x07"  # window title (OSC, BEL)
    b"\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\ "  # hyperlink (OSC, ST)
    b"\x1b[2J\x1b[H\x1b[3A\x1b[?25l"  # clear screen, home, cursor up, hide cursor
    b"\x1bc\x1b(B\x1b7"  # reset terminal, charset, save cursor
    b"\x9b2J\xc2\x9d0;t\xc2\x9c"  # raw 8-bit CSI, UTF-8 C1 OSC ... ST
    b"\x1b[31;1mFAILED\x1b[0m tests/test_app.py \xe2\x9c\x97 caf\xc3\xa9\t\xff\n"
    b"progress 10%\rprogress 100%\r\n"
    b"bell\x07 back\x08space nul\x00\n"
    b"\x1b[38;5;196m256\x1b[m \x1b[>4;2m"
)
PLAIN = (
    b"$ pytest\n"
    b"link "
    b"FAILED tests/test_app.py \xe2\x9c\x97 caf\xc3\xa9\t\xff\n"
    b"progress 10%\nprogress 100%\n"
    b"bell backspace nul\n"
    b"256 "
)
COLOURED = (
    b"\x1b[1m$ pytest\x1b[0m\n"
    b"link "
    b"\x1b[31;1mFAILED\x1b[0m tests/test_app.py \xe2\x9c\x97 caf\xc3\xa9\t\xff\n"
    b"progress 10%\nprogress 100%\n"
    b"bell backspace nul\n"
    b"\x1b[38;5;196m256\x1b[m "
)


def filtered(data: bytes, keep_colors: bool, chunk: int) -> bytes:
    logfilter = LogFilter(keep_colors=keep_colors)
    out = b"".join(logfilter.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))
    return out + logfilter.close()


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, len(LOG)])
def test_logs_without_colour_keep_only_text_tabs_and_newlines(chunk: int) -> None:
    assert filtered(LOG, False, chunk) == PLAIN


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, len(LOG)])
def test_logs_with_colour_keep_colours_and_nothing_else(chunk: int) -> None:
    assert filtered(LOG, True, chunk) == COLOURED


def test_plain_logs_pass_unchanged() -> None:
    text = "compiling\n\tlinking ✓\nno newline at the end".encode()
    assert filtered(text, False, 7) == text
    assert filtered(text, True, 7) == text


def test_colours_left_on_are_reset_at_the_end() -> None:
    assert filtered(b"\x1b[31mred and never reset", True, 4) == (
        b"\x1b[31mred and never reset\x1b[0m"
    )
    assert filtered(b"\x1b[31mred\x1b[0m", True, 4) == b"\x1b[31mred\x1b[0m"


def test_unterminated_and_oversized_sequences_are_dropped() -> None:
    title = b"before\x1b]0;" + b"x" * 100_000  # never terminated: nothing of it shows
    assert filtered(title, True, 4096) == b"before"
    long_csi = b"\x1b[" + b"1;" * 100 + b"31mtext"
    assert filtered(long_csi, True, 16) == b"text"
    assert filtered(b"end\x1b", False, 1) == b"end"
    assert filtered(b"end\r", False, 1) == b"end\n"


def test_an_esc_inside_a_control_string_ends_it() -> None:
    # xterm: ESC aborts an OSC; what follows is read again
    assert filtered(b"\x1b]0;title\x1b[31mred\x1b[0m", True, 3) == b"\x1b[31mred\x1b[0m"


class Interrupted:
    """A session whose log stream sends ``chunks``, then Ctrl-C arrives."""

    def __init__(self, *chunks: bytes) -> None:
        self.client = self
        self.chunks = chunks

    @contextmanager
    def stream_logs(self, *args: object, **kwargs: object) -> Iterator[Iterator[Any]]:
        def stream() -> Iterator[Any]:
            offset = 0
            for data in self.chunks:
                yield runs_pb2.LogChunk(offset=offset, data=data)
                offset += len(data)
            raise KeyboardInterrupt

        yield stream()


def test_an_interrupted_follow_leaves_no_colour_on() -> None:
    session = Interrupted(b"\x1b[1m$ make\x1b[0m\n", b"\x1b[31mcompiling")
    out = io.BytesIO()
    with pytest.raises(KeyboardInterrupt):
        stream_stage(session, "r-1", "build", follow=True, out=out, color=True)  # type: ignore[arg-type]
    assert out.getvalue() == b"\x1b[1m$ make\x1b[0m\n\x1b[31mcompiling\x1b[0m"


# -- every server string the CLI renders -------------------------------------------


def fill(message: Message, text: str, depth: int = 0) -> Message:
    """Set every string of ``message`` (and of its sub-messages, lists and map
    keys) to ``text``; a few items per list."""
    for field in message.DESCRIPTOR.fields:
        value: Any = getattr(message, field.name)
        repeated = field.is_repeated
        submessage = field.message_type
        if field.type == FieldDescriptor.TYPE_STRING:
            if repeated:
                value.extend([f"{text}{n}" for n in range(2)])
            else:
                setattr(message, field.name, text)
        elif submessage is not None and submessage.GetOptions().map_entry:
            if submessage.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING:
                for n in range(3):
                    value[f"{text}{n}"] = n + 1
        elif submessage is not None and depth < 4:
            if submessage.full_name.startswith("google.protobuf"):
                continue
            if repeated:
                for _ in range(2):
                    fill(value.add(), text, depth + 1)
            else:
                fill(value, text, depth + 1)
    return message


def hostile_run() -> runs_pb2.Run:
    run = fill(runs_pb2.Run(), HOSTILE)
    assert isinstance(run, runs_pb2.Run)
    run.status = runs_pb2.RUN_STATUS_FAILED
    for stage in run.stages:
        stage.status = runs_pb2.STAGE_STATUS_FAILED
        stage.exit_code = 1
        stage.started_at.FromSeconds(1_700_000_000)
        stage.finished_at.FromSeconds(1_700_000_009)
        stage.report.findings[0].baselined = True
    return run


def test_the_hostile_run_has_hostile_strings_everywhere() -> None:
    run = hostile_run()
    assert HOSTILE in run.concurrency_group and HOSTILE in run.stages[1].report.gate_reason
    assert run.stages[0].report.findings[1].fingerprint == HOSTILE
    assert any(HOSTILE in key for key in run.stages[0].report.counts)


def test_show_runs_and_trace_escape_every_server_string() -> None:
    run = hostile_run()
    for lines in (
        render.run_detail(run),
        render.run_detail(run, limit=render.ALL, min_severity="low"),
        render.runs_table([run]),
        timeline(run, now=1_700_000_010),
    ):
        assert lines and acting(lines) == []
    detail = "\n".join(render.run_detail(run))
    assert "concurrency:   " + printable(HOSTILE) in detail


def test_test_reports_escape_every_server_string() -> None:
    run = hostile_run()
    stage = run.stages[0]
    stage.report.kind = "test"
    stage.report.ClearField("findings")
    assert acting(render.stage_report(stage.name, stage.report, limit=render.ALL)) == []


def test_submit_validate_plugins_and_status_escape_every_server_string() -> None:
    response = fill(runs_pb2.SubmitRunResponse(), HOSTILE)
    assert isinstance(response, runs_pb2.SubmitRunResponse)
    assert acting(render.submitted(response)) == []

    validation = fill(pipelines_pb2.ValidatePipelineResponse(), HOSTILE)
    assert isinstance(validation, pipelines_pb2.ValidatePipelineResponse)
    for valid in (False, True):
        validation.valid = valid
        lines = render.validation(validation, HOSTILE)
        assert lines and acting(lines) == []

    plugins = [fill(server_pb2.Plugin(), HOSTILE) for _ in range(2)]
    assert acting(render.plugins_table(plugins)) == []  # type: ignore[arg-type]
    status = fill(server_pb2.GetServerStatusResponse(), HOSTILE)
    assert acting(render.server_status(status, HOSTILE)) == []  # type: ignore[arg-type]


def test_a_multi_line_diagnostic_keeps_its_lines_escaped_and_indented() -> None:
    response = pipelines_pb2.ValidatePipelineResponse(
        diagnostics=[
            pipelines_pb2.Diagnostic(
                line=3,
                column=1,
                path="stages.scan",
                message="`scan` is indented less than the other stages\n  scan:\x1b[2J\n  ^",
            )
        ]
    )
    assert render.validation(response, "ci.yaml") == [
        "ci.yaml:3:1: stages.scan: `scan` is indented less than the other stages",
        "    scan:\\x1b[2J",
        "    ^",
    ]


def test_watch_escapes_every_server_string() -> None:
    run = hostile_run()
    view = RunView.from_run(run)
    event = fill(runs_pb2.RunEvent(), HOSTILE)
    assert isinstance(event, runs_pb2.RunEvent)
    for kind in (
        runs_pb2.RUN_EVENT_KIND_STAGE_STATUS,
        runs_pb2.RUN_EVENT_KIND_STAGE_RETRY,
        runs_pb2.RUN_EVENT_KIND_RUN_STATUS,
    ):
        event.kind = kind
        event.stage_status = runs_pb2.STAGE_STATUS_FAILED
        view.apply(event)
        assert acting(event_line(view, event)) == []
    assert acting([view.header(), *view.stage_lines(ASCII_SYMBOLS, "<-")]) == []
    assert acting(summary(run)) == []

    out = io.StringIO()
    renderer = LineRenderer(out)
    renderer.start(view)
    renderer.event(view, event, live=True)
    assert acting(out.getvalue()) == []

    # on a terminal, the only escapes are the renderer's own
    tty = io.StringIO()
    TtyRenderer(tty, color=False).draw(view)
    own = re.compile(r"\x1b\[(\d+A|2K|J)")
    assert acting(own.sub("", tty.getvalue().replace("\r", ""))) == []


def test_watch_colours_follow_the_policy() -> None:
    run = hostile_run()
    run.stages[0].name = "build"
    view = RunView.from_run(run)
    for color in (False, True):
        out = io.StringIO()
        TtyRenderer(out, color=color).draw(view)
        assert ("\x1b[31m" in out.getvalue()) is color
    event = runs_pb2.RunEvent(
        kind=runs_pb2.RUN_EVENT_KIND_STAGE_STATUS,
        stage="build",
        stage_status=runs_pb2.STAGE_STATUS_SUCCEEDED,
    )
    assert "build \x1b[32msucceeded\x1b[0m" in event_line(view, event, color=True)
    assert "\x1b" not in event_line(view, event)
