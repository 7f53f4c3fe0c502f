"""A run's stage timings on one time axis: how long the run was queued,
and per stage how long it waited for a slot once its needs were done, then
each attempt (from the run's events: a retry ends one attempt, the next
one starts after its back-off)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from conveyor.client.render import format_duration
from conveyor.daemon.records import (
    EventKind,
    EventRecord,
    RunRecord,
    StageRecord,
    StageStatus,
)
from conveyor.daemon.web.html import Markup, html, join
from conveyor.daemon.web.pages.common import badge

#: The bars' coordinate width (the SVG stretches to the column).
SCALE = 1000.0


def _short(seconds: float) -> str:
    """``35ms`` under a second, else as the CLI says durations."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return format_duration(seconds)


@dataclass
class Attempt:
    number: int
    start: float
    end: float | None = None
    #: How it ended: the stage's final status, or "retried".
    outcome: str = "running"


@dataclass
class StageTimes:
    stage: StageRecord
    #: When its needs were all done (and the run had started): from then
    #: on it waited (for the checkout, for a free slot) until its first attempt.
    ready: float | None = None
    attempts: list[Attempt] = field(default_factory=list)


def attempts_from_events(events: Sequence[EventRecord]) -> dict[str, list[Attempt]]:
    """Each stage's attempts, from the run's events in order."""
    found: dict[str, list[Attempt]] = {}
    for event in events:
        if not event.stage:
            continue
        attempts = found.setdefault(event.stage, [])
        current = attempts[-1] if attempts and attempts[-1].end is None else None
        if event.kind is EventKind.STAGE_RETRY:
            if current is not None:
                current.end, current.outcome = event.time, "retried"
        elif event.stage_status is StageStatus.RUNNING:
            if current is not None:  # a start without the end of the one before
                current.end, current.outcome = event.time, "retried"
            attempts.append(Attempt(event.attempt or len(attempts) + 1, event.time))
        elif event.stage_status is not None and event.stage_status.finished and current is not None:
            current.end, current.outcome = event.time, event.stage_status.value
    return found


def timings(run: RunRecord, events: Sequence[EventRecord]) -> list[StageTimes]:
    by_events = attempts_from_events(events)
    finished = {s.name: s.finished_at for s in run.stages}
    out = []
    for stage in run.stages:
        attempts = by_events.get(stage.name, [])
        if not attempts and stage.started_at is not None:  # events not at hand
            attempts = [
                Attempt(
                    max(stage.attempt, 1), stage.started_at, stage.finished_at, stage.status.value
                )
            ]
        if attempts and attempts[-1].end is None and stage.status.finished:
            attempts[-1].end, attempts[-1].outcome = stage.finished_at, stage.status.value
        ready = None
        if run.started_at is not None:
            needs_done = [finished.get(n) for n in stage.needs]
            if all(t is not None for t in needs_done):
                ready = max([run.started_at, *(t for t in needs_done if t is not None)])
        out.append(StageTimes(stage, ready, attempts))
    return out


def _rect(kind: str, start: float, end: float, origin: float, span: float, tip: str) -> Markup:
    x = (start - origin) / span * SCALE
    width = max((end - start) / span * SCALE, 2.0)
    return html(
        '<rect class="{}" x="{}" y="0" width="{}" height="10"><title>{}</title></rect>',
        kind,
        f"{x:.1f}",
        f"{min(width, SCALE - x):.1f}",
        tip,
    )


def gantt(run: RunRecord, events: Sequence[EventRecord], *, now: float | None = None) -> Markup:
    """The timings table: a row for the run's queue time, a row per stage."""
    now = now if now is not None else time.time()
    origin = run.created_at
    end = run.finished_at or now
    span = max(end - origin, 1e-3)
    rows = []
    queued_until = run.started_at or (None if run.status.finished else now)
    bars: list[Markup] = []
    if queued_until is not None:
        bars.append(_rect("queued", origin, queued_until, origin, span, "queued"))
    rows.append(
        _row(
            "run",
            badge(run.status),
            "+0s",
            f"queued {_short(max(0.0, (queued_until or origin) - origin))}",
            bars,
        )
    )
    for times in timings(run, events):
        stage = times.stage
        bars = []
        first = times.attempts[0].start if times.attempts else None
        if times.ready is not None and (first is None or first > times.ready):
            wait_end = first if first is not None else (None if stage.status.finished else now)
            if wait_end is not None and wait_end > times.ready:
                tip = f"waited {_short(wait_end - times.ready)} to start (checkout, a slot)"
                bars.append(_rect("waiting", times.ready, wait_end, origin, span, tip))
        for attempt in times.attempts:
            stop = attempt.end if attempt.end is not None else now
            took = _short(stop - attempt.start)
            tip = f"attempt {attempt.number}: {attempt.outcome}, {took}"
            bars.append(_rect(f"attempt {attempt.outcome}", attempt.start, stop, origin, span, tip))
        started = f"+{_short(first - origin)}" if first is not None else "-"
        took = "-"
        if times.attempts:
            last = times.attempts[-1]
            took = _short((last.end if last.end is not None else now) - times.attempts[0].start)
            if len(times.attempts) > 1:
                took += f" ({len(times.attempts)} attempts)"
        rows.append(_row(stage.name, badge(stage.status), started, took, bars))
    return html(
        '<table class="gantt"><thead><tr><th>Stage</th><th>Status</th><th class="num">Start</th>'
        '<th class="num">Duration</th><th class="axis"><div><span>0s</span><span>{}</span>'
        "<span>{}</span></div></th></tr></thead><tbody>{}</tbody></table>",
        _short(span / 2),
        _short(span),
        join(rows),
    )


def _row(name: str, status: Markup, start: str, took: str, bars: list[Markup]) -> Markup:
    return html(
        '<tr><td class="name">{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td>'
        '<td class="bars"><svg viewBox="0 0 {} 10" preserveAspectRatio="none">{}</svg></td></tr>',
        name,
        status,
        start,
        took,
        str(int(SCALE)),
        join(bars),
    )
