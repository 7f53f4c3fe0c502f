"""`conveyor watch`: follow a run's stage DAG live."""

from __future__ import annotations

import os
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
            name=stage.name,
            needs=list(stage.needs),
            status=stage.status or _S.STAGE_STATUS_PENDING,
            attempt=stage.attempt,
            exit_code=stage.exit_code if stage.HasField("exit_code") else None,
            started=render.ts_seconds(stage.started_at),
            finished=render.ts_seconds(stage.finished_at),
            reason=stage.reason,
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
            run_id=run.id,
            number=run.number,
            pipeline=run.pipeline,
            status=run.status,
            started=render.ts_seconds(run.started_at),
            finished=render.ts_seconds(run.finished_at),
            stages={s.name: StageState.from_stage(s) for s in run.stages},
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
        stage = self.stages.get(event.stage)
        if stage is None:
            stage = self.stages[event.stage] = StageState(name=event.stage, needs=[])
        if event.attempt:
            stage.attempt = event.attempt
        if event.message:
            stage.reason = event.message
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


def event_line(view: RunView, event: runs_pb2.RunEvent) -> str:
    """One line per event, for logs and pipes (apply the event to `view` first)."""
    clock = render.format_clock(render.ts_seconds(event.time) or time.time())
    if event.kind == _S.RUN_EVENT_KIND_RUN_STATUS:
        text = f"run {render.run_status_name(event.run_status)}"
        if event.run_status in render.RUN_TERMINAL:
            text += f" in {render.format_duration(render.span(view.started, view.finished))}"
    elif event.kind == _S.RUN_EVENT_KIND_STAGE_RETRY:
        text = f"{event.stage} retrying (attempt {event.attempt})"
    else:
        # A stage skipped or cancelled before it started has no attempt (0): say nothing.
        details = [f"attempt {event.attempt}"] if event.attempt else []
        if event.HasField("exit_code"):
            details.append(f"exit {event.exit_code}")
        status = render.stage_status_name(event.stage_status)
        text = f"{event.stage} {status}" + (f" ({', '.join(details)})" if details else "")
        stage = view.stages.get(event.stage)
        if stage is not None and event.stage_status in render.STAGE_TERMINAL:
            duration = render.span(stage.started, stage.finished)
            if duration is not None:
                text += f" in {render.format_duration(duration)}"
    if event.message:
        text += f": {event.message}"
    return f"{clock} {text}"


def summary(run: runs_pb2.Run) -> list[str]:
    duration = render.format_duration(render.run_duration(run))
    lines = [
        f"run {run.id} #{run.number} {run.pipeline} {render.run_status_name(run.status)}"
        f" in {duration}" + (f": {run.reason}" if run.reason else "")
    ]
    width = max((len(s.name) for s in run.stages), default=0)
    for stage in run.stages:
        line = (
            f"  {stage.name:<{width}}  {render.stage_status_name(stage.status):<11} "
            f"{render.format_duration(render.ts_span(stage.started_at, stage.finished_at)):>7}"
        )
        if stage.reason and stage.status != _S.STAGE_STATUS_SUCCEEDED:
            line += f"  {stage.reason}"
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

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def start(self, view: RunView) -> None:
        names = ", ".join(view.stages) or "none"
        self.out.write(
            f"watching run {view.run_id} #{view.number} {view.pipeline} (stages: {names})\n"
        )
        self.out.flush()

    def event(self, view: RunView, event: runs_pb2.RunEvent, live: bool) -> None:
        self.out.write(event_line(view, event) + "\n")
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

    def __init__(self, out: TextIO) -> None:
        self.out = out
        unicode = _can_encode(out, "".join(UNICODE_SYMBOLS.values()) + "←")
        self.symbols = UNICODE_SYMBOLS if unicode else ASCII_SYMBOLS
        self.arrow = "←" if unicode else "<-"
        self.color = not os.environ.get("NO_COLOR")
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
        return f"  \x1b[{code}m{line[2]}\x1b[0m{line[3:]}"

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
    """Follow a run until it ends; 0 when it succeeded, 1 otherwise, 130 on Ctrl-C."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    run = session.client.get_run(run_id)
    view = RunView.from_run(run)
    renderer: LineRenderer | TtyRenderer = TtyRenderer(out) if tty else LineRenderer(out)
    renderer.start(view)
    try:
        _follow(session, view, renderer, run.last_event_seq, TICK_SECONDS if tty else None)
    except KeyboardInterrupt:
        renderer.finish(view)
        print(
            f"conveyor: stopped watching; run {run.id} goes on (`conveyor cancel {run.id}`"
            " stops it)",
            file=sys.stderr,
        )
        return 130
    final = session.client.get_run(run.id)
    view = RunView.from_run(final)
    renderer.finish(view)
    out.write("\n".join(summary(final)) + "\n")
    out.flush()
    return 0 if final.status == _S.RUN_STATUS_SUCCEEDED else 1
