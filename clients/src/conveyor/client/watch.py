"""`conveyor watch`: follow a run's stage DAG live.

Names, reasons and messages from the daemon are escaped with
:func:`~conveyor.client.terminal.printable` as they are stored in the view;
colours follow ``--color`` (:func:`~conveyor.client.terminal.use_color`).
"""

from __future__ import annotations

import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from conveyor.client import render
from conveyor.client.connection import Stream
from conveyor.client.errors import DaemonUnavailable
from conveyor.client.session import STREAM_RETRIES, Session
from conveyor.client.terminal import paint, printable, use_color
from conveyor.v1 import runs_pb2

_S = runs_pb2
UNICODE_SYMBOLS: dict[int, str] = {
    _S.STAGE_STATUS_PENDING: "○",
    _S.STAGE_STATUS_RUNNING: "●",
    _S.STAGE_STATUS_SUCCEEDED: "✓",
    _S.STAGE_STATUS_FAILED: "✗",
    _S.STAGE_STATUS_CANCELLED: "⊘",
    _S.STAGE_STATUS_TIMED_OUT: "✗",
    _S.STAGE_STATUS_SKIPPED: "↷",
    _S.STAGE_STATUS_INTERRUPTED: "!",
}
ASCII_SYMBOLS: dict[int, str] = {
    _S.STAGE_STATUS_PENDING: ".",
    _S.STAGE_STATUS_RUNNING: ">",
    _S.STAGE_STATUS_SUCCEEDED: "+",
    _S.STAGE_STATUS_FAILED: "x",
    _S.STAGE_STATUS_CANCELLED: "-",
    _S.STAGE_STATUS_TIMED_OUT: "x",
    _S.STAGE_STATUS_SKIPPED: "~",
    _S.STAGE_STATUS_INTERRUPTED: "!",
}
COLORS: dict[int, str] = {
    _S.STAGE_STATUS_RUNNING: "33",
    _S.STAGE_STATUS_SUCCEEDED: "32",
    _S.STAGE_STATUS_FAILED: "31",
    _S.STAGE_STATUS_TIMED_OUT: "31",
    _S.STAGE_STATUS_INTERRUPTED: "31",
}
TICK_SECONDS = 0.5


@dataclass
class StageState:
    name: str
    needs: list[str]
    status: int = _S.STAGE_STATUS_PENDING
    attempt: int = 0
    exit_code: int | None = None
    started: float | None = None
    finished: float | None = None
    reason: str = ""

    @classmethod
    def from_stage(cls, stage: runs_pb2.Stage) -> StageState:
        return cls(
            name=printable(stage.name),
            needs=[printable(need) for need in stage.needs],
            status=stage.status or _S.STAGE_STATUS_PENDING,
            attempt=stage.attempt,
            exit_code=stage.exit_code if stage.HasField("exit_code") else None,
            started=render.ts_seconds(stage.started_at),
            finished=render.ts_seconds(stage.finished_at),
            reason=printable(stage.reason),
        )


@dataclass
class RunView:
    """A run's state as rebuilt from GetRun and then WatchRun events."""

    run_id: str
    number: int
    pipeline: str
    status: int
    started: float | None
    finished: float | None
    stages: dict[str, StageState] = field(default_factory=dict)

    @classmethod
    def from_run(cls, run: runs_pb2.Run) -> RunView:
        return cls(
            run_id=printable(run.id),
            number=run.number,
            pipeline=printable(run.pipeline),
            status=run.status,
            started=render.ts_seconds(run.started_at),
            finished=render.ts_seconds(run.finished_at),
            stages={state.name: state for state in map(StageState.from_stage, run.stages)},
        )

    def apply(self, event: runs_pb2.RunEvent) -> None:
        at = render.ts_seconds(event.time) or time.time()
        if event.kind == _S.RUN_EVENT_KIND_RUN_STATUS:
            self.status = event.run_status
            if event.run_status == _S.RUN_STATUS_RUNNING and self.started is None:
                self.started = at
            if event.run_status in render.RUN_TERMINAL:
                self.finished = at
            return
        if not event.stage:
            return
        name = printable(event.stage)
        stage = self.stages.get(name)
        if stage is None:
            stage = self.stages[name] = StageState(name=name, needs=[])
        if event.attempt:
            stage.attempt = event.attempt
        if event.message:
            stage.reason = printable(event.message)
        if event.stage_status:
            stage.status = event.stage_status
            stage.exit_code = event.exit_code if event.HasField("exit_code") else None
            if event.stage_status == _S.STAGE_STATUS_RUNNING:
                stage.started, stage.finished = at, None
            elif event.stage_status in render.STAGE_TERMINAL:
                stage.finished = at

    def header(self, now: float | None = None) -> str:
        line = f"run {self.run_id} #{self.number} {self.pipeline}  "
        line += render.run_status_name(self.status)
        if self.started is not None:
            line += "  " + render.format_duration(render.span(self.started, self.finished, now))
        return line

    def stage_lines(
        self, symbols: dict[int, str], arrow: str, now: float | None = None
    ) -> list[str]:
        width = max((len(name) for name in self.stages), default=0)
        lines = []
        for stage in self.stages.values():
            duration = render.format_duration(render.span(stage.started, stage.finished, now))
            if stage.started is None:
                duration = ""
            line = (
                f"  {symbols.get(stage.status, '?')} {stage.name:<{width}}  "
                f"{render.stage_status_name(stage.status):<11} {duration:>7}"
            )
            if stage.attempt > 1:
                line += f"  attempt {stage.attempt}"
            if stage.needs:
                line += f"  {arrow} {', '.join(stage.needs)}"
            if stage.status in render.STAGE_TERMINAL and stage.reason:
                line += f"  ({stage.reason})"
            lines.append(line.rstrip())
        return lines


def event_line(view: RunView, event: runs_pb2.RunEvent, color: bool = False) -> str:
    """One line per event, for logs and pipes (apply the event to `view` first);
    with ``color``, the status of a stage is coloured."""
    clock = render.format_clock(render.ts_seconds(event.time) or time.time())
    name = printable(event.stage)
    if event.kind == _S.RUN_EVENT_KIND_RUN_STATUS:
        text = f"run {render.run_status_name(event.run_status)}"
        if event.run_status in render.RUN_TERMINAL:
            text += f" in {render.format_duration(render.span(view.started, view.finished))}"
    elif event.kind == _S.RUN_EVENT_KIND_STAGE_RETRY:
        text = f"{name} retrying (attempt {event.attempt})"
    else:
        # A stage skipped or cancelled before it started has no attempt (0): say nothing.
        details = [f"attempt {event.attempt}"] if event.attempt else []
        if event.HasField("exit_code"):
            details.append(f"exit {event.exit_code}")
        status = paint(
            render.stage_status_name(event.stage_status), COLORS.get(event.stage_status), color
        )
        text = f"{name} {status}" + (f" ({', '.join(details)})" if details else "")
        stage = view.stages.get(name)
        if stage is not None and event.stage_status in render.STAGE_TERMINAL:
            duration = render.span(stage.started, stage.finished)
            if duration is not None:
                text += f" in {render.format_duration(duration)}"
    if event.message:
        text += f": {printable(event.message)}"
    return f"{clock} {text}"


def summary(run: runs_pb2.Run) -> list[str]:
    duration = render.format_duration(render.run_duration(run))
    lines = [
        f"run {printable(run.id)} #{run.number} {printable(run.pipeline)}"
        f" {render.run_status_name(run.status)} in {duration}"
        + (f": {printable(run.reason)}" if run.reason else "")
    ]
    names = [printable(s.name) for s in run.stages]
    width = max((len(name) for name in names), default=0)
    for name, stage in zip(names, run.stages, strict=True):
        line = (
            f"  {name:<{width}}  {render.stage_status_name(stage.status):<11} "
            f"{render.format_duration(render.ts_span(stage.started_at, stage.finished_at)):>7}"
        )
        if stage.reason and stage.status != _S.STAGE_STATUS_SUCCEEDED:
            line += f"  {printable(stage.reason)}"
        lines.append(line.rstrip())
    return lines


def _can_encode(out: TextIO, text: str) -> bool:
    try:
        text.encode(out.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class LineRenderer:
    """For pipes and files: one line per event."""

    def __init__(self, out: TextIO, color: bool = False) -> None:
        self.out = out
        self.color = color

    def start(self, view: RunView) -> None:
        names = ", ".join(view.stages) or "none"
        self.out.write(
            f"watching run {view.run_id} #{view.number} {view.pipeline} (stages: {names})\n"
        )
        self.out.flush()

    def event(self, view: RunView, event: runs_pb2.RunEvent, live: bool) -> None:
        self.out.write(event_line(view, event, self.color) + "\n")
        self.out.flush()

    def tick(self, view: RunView) -> None:
        pass

    def note(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def finish(self, view: RunView) -> None:
        pass


class TtyRenderer:
    """For terminals: the stage list redrawn in place."""

    def __init__(self, out: TextIO, color: bool = True) -> None:
        self.out = out
        unicode = _can_encode(out, "".join(UNICODE_SYMBOLS.values()) + "←")
        self.symbols = UNICODE_SYMBOLS if unicode else ASCII_SYMBOLS
        self.arrow = "←" if unicode else "<-"
        self.color = color
        self._drawn = 0

    def _colored(self, line: str, view: RunView) -> str:
        # Stage lines start with "  <symbol> <name>": color the symbol only.
        if not self.color or len(line) < 4 or line[:2] != "  ":
            return line
        name = line[4:].split(" ", 1)[0]
        stage = view.stages.get(name)
        code = COLORS.get(stage.status) if stage else None
        if code is None:
            return line
        return f"  {paint(line[2], code, True)}{line[3:]}"

    def draw(self, view: RunView) -> None:
        width = max(20, shutil.get_terminal_size().columns - 1)
        lines = [view.header(), *view.stage_lines(self.symbols, self.arrow)]
        parts = [f"\x1b[{self._drawn}A\r" if self._drawn else ""]
        for line in lines:
            parts.append("\x1b[2K" + self._colored(line[:width], view) + "\n")
        parts.append("\x1b[J")
        self.out.write("".join(parts))
        self.out.flush()
        self._drawn = len(lines)

    def start(self, view: RunView) -> None:
        self.draw(view)

    def event(self, view: RunView, event: runs_pb2.RunEvent, live: bool) -> None:
        if live:
            self.draw(view)

    def tick(self, view: RunView) -> None:
        self.draw(view)

    def note(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
        self._drawn = 0

    def finish(self, view: RunView) -> None:
        self.draw(view)
        self.out.write("\n")


def _events(
    stream: Stream[runs_pb2.RunEvent], tick: float | None
) -> Iterator[runs_pb2.RunEvent | None]:
    """The stream's events, read by a thread; None every `tick` seconds of silence."""
    items: queue.Queue[runs_pb2.RunEvent | BaseException | None] = queue.Queue()

    def pump() -> None:
        try:
            for event in stream:
                items.put(event)
            items.put(None)
        except BaseException as exc:
            items.put(exc)

    threading.Thread(target=pump, name="conveyor-watch", daemon=True).start()
    while True:
        try:
            item = items.get(timeout=tick)
        except queue.Empty:
            yield None
            continue
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _follow(
    session: Session,
    view: RunView,
    renderer: LineRenderer | TtyRenderer,
    caught_up: int,
    tick: float | None,
) -> None:
    last_seq = 0
    failures = 0
    while True:
        stream = session.client.watch_run(view.run_id, after_seq=last_seq)
        try:
            with stream:
                for event in _events(stream, tick):
                    if event is None:
                        renderer.tick(view)
                    elif event.seq > last_seq:
                        view.apply(event)
                        last_seq, failures = event.seq, 0
                        renderer.event(view, event, live=event.seq >= caught_up)
            return
        except DaemonUnavailable:
            failures += 1
            if failures > STREAM_RETRIES:
                raise
            renderer.note("conveyor: lost the daemon; reconnecting...")
            session.reconnect()


def watch(session: Session, run_id: str, out: TextIO | None = None, tty: bool | None = None) -> int:
    """Follow a run until it ends; 0 when it succeeded, 1 otherwise, 130 on Ctrl-C.
    Colours follow ``session.color``."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    color = use_color(session.color, out)
    run = session.client.get_run(run_id)
    view = RunView.from_run(run)
    renderer: LineRenderer | TtyRenderer = (
        TtyRenderer(out, color) if tty else LineRenderer(out, color)
    )
    renderer.start(view)
    try:
        _follow(session, view, renderer, run.last_event_seq, TICK_SECONDS if tty else None)
    except KeyboardInterrupt:
        renderer.finish(view)
        print(
            f"conveyor: stopped watching; run {view.run_id} goes on"
            f" (`conveyor cancel {view.run_id}` stops it)",
            file=sys.stderr,
        )
        return 130
    final = session.client.get_run(run.id)
    view = RunView.from_run(final)
    renderer.finish(view)
    out.write("\n".join(summary(final)) + "\n")
    out.flush()
    return 0 if final.status == _S.RUN_STATUS_SUCCEEDED else 1
