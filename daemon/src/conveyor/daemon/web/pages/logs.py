"""A stage's log: a window of it rendered in the page, then (when the
window reaches the end) the rest as it is written."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.daemon.records import RunRecord, StageRecord
from conveyor.daemon.web.html import Markup, html, url
from conveyor.daemon.web.pages.common import View, badge, duration, layout, link, moment
from conveyor.daemon.web.pages.run import human_size


@dataclass(frozen=True)
class Window:
    """The bytes of the log shown in the page: ``[start, end)`` of ``size``."""

    start: int
    end: int
    size: int
    html: Markup
    #: The page follows the log from ``end`` (the window reached the end of
    #: a log still written, or of a stage that has not finished).
    follow: bool


def stage_head(run: RunRecord, stage: StageRecord) -> Markup:
    reason = (
        html('<p class="reason" data-status="{}">{}</p>', stage.status, stage.reason)
        if stage.reason
        else Markup("")
    )
    return html(
        '<h1>{name} <span class="muted">{kind}</span> {status}</h1>{reason}'
        '<dl class="facts"><dt>Attempt</dt><dd>{attempt}</dd><dt>Exit code</dt><dd>{exit}</dd>'
        "<dt>Started</dt><dd>{started}</dd><dt>Duration</dt><dd>{took}</dd>"
        "<dt>Log</dt><dd>{size}</dd><dt>Needs</dt><dd>{needs}</dd></dl>",
        name=stage.name,
        kind=stage.kind,
        status=badge(stage.status),
        reason=reason,
        attempt=str(stage.attempt) if stage.attempt else "-",
        exit=str(stage.exit_code) if stage.exit_code is not None else "-",
        started=moment(stage.started_at),
        took=duration(stage.started_at, stage.finished_at),
        size=human_size(stage.log_size),
        needs=", ".join(stage.needs) or "-",
    )


def log_page(view: View, run: RunRecord, stage: StageRecord, window: Window) -> Markup:
    segments = ("runs", run.id, "stages", stage.name)
    earlier = (
        html(
            '<a id="log-earlier" href="{}">← earlier output (from byte {})</a>',
            url(*segments, offset=max(0, window.start - (window.end - window.start or 1))),
            str(window.start),
        )
        if window.start > 0
        else Markup('<span id="log-earlier"></span>')
    )
    later = Markup("")
    if not window.follow and window.end < window.size:
        later = html(
            '<a href="{}">later output (from byte {}) →</a> · <a href="{}">the end</a>',
            url(*segments, offset=window.end),
            str(window.end),
            url(*segments),
        )
    body = html(
        '<p class="crumbs"><a href="/">Runs</a> / {run} / {stage}</p>'
        '<div id="stage-head">{head}</div>'
        '<p class="logbar">{earlier} <span id="log-range">bytes {start} to {end} of {size}</span>'
        ' · <a href="{start_url}">from the start</a> · <a href="{tail}">the end</a>'
        ' · <a href="{raw}" download>download</a> {later}'
        ' <label class="follow"><input type="checkbox" id="log-follow" checked> follow</label></p>'
        '<pre id="log" class="log" data-stream="{stream}" data-start="{start}" data-end="{end}"'
        ' data-size-url="{self_url}">'
        '<span class="chunk" data-offset="{start}" data-end="{end}">{text}</span></pre>'
        '<p id="log-state" class="muted">{state}</p>',
        run=link(f"#{run.number} {run.pipeline}", "runs", run.id),
        stage=stage.name,
        head=stage_head(run, stage),
        earlier=earlier,
        start=str(window.start),
        end=str(window.end),
        size=str(window.size),
        start_url=url(*segments, offset=0),
        tail=url(*segments),
        raw=url(*segments, "raw"),
        later=later,
        stream=url(*segments, "log") if window.follow else "",
        self_url=url(*segments),
        text=window.html,
        state="following the log…" if window.follow else "",
    )
    return layout(view, f"{stage.name} · run #{run.number}", body, section="Runs")
