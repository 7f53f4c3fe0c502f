"""The runs page: newest first, filtered, updated live."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.daemon.records import RunRecord, RunStatus
from conveyor.daemon.web.html import Markup, html, join, url
from conveyor.daemon.web.pages.common import (
    View,
    badge,
    duration,
    empty,
    filters,
    layout,
    link,
    moment,
    select_field,
    short,
    text_field,
)

COLUMNS = 9


@dataclass(frozen=True)
class RunQuery:
    """The runs page's filters, as its URL gives them."""

    pipeline: str = ""
    status: str = ""
    commit: str = ""
    #: A page of older runs: those before this run id.
    before: str = ""

    def params(self) -> dict[str, str]:
        return {"pipeline": self.pipeline, "status": self.status, "commit": self.commit}


def run_row(run: RunRecord) -> Markup:
    stages = run.stages
    done = sum(1 for s in stages if s.status.finished)
    return html(
        '<tr data-run="{id}"><td>{number}</td><td>{pipeline}</td><td>{status}</td>'
        '<td class="num">{done}/{total}</td><td>{ref}</td><td>{commit}</td><td>{trigger}</td>'
        "<td>{created}</td><td>{took}</td></tr>",
        id=run.id,
        number=link(f"#{run.number}", "runs", run.id),
        pipeline=link(run.pipeline, "runs", run.id),
        status=badge(run.status),
        done=str(done),
        total=str(len(stages)),
        ref=run.ref,
        commit=short(run.commit),
        trigger=f"{run.trigger} by {run.submitted_by}" if run.submitted_by else str(run.trigger),
        created=moment(run.created_at),
        took=duration(run.started_at, run.finished_at),
    )


def rows(runs: Sequence[RunRecord]) -> Markup:
    if not runs:
        return empty("No runs match.", COLUMNS)
    return join(run_row(run) for run in runs)


def runs_page(view: View, query: RunQuery, runs: Sequence[RunRecord], next_token: str) -> Markup:
    form = filters(
        "/",
        [
            text_field("pipeline", "Pipeline", query.pipeline),
            select_field("status", "Status", query.status, [s.value for s in RunStatus]),
            text_field("commit", "Commit", query.commit, "hex prefix"),
        ],
    )
    live = "" if query.before else url("live", "runs", **query.params())
    older = (
        html(
            '<p class="pager"><a href="{}">Older runs →</a></p>',
            url("", **query.params(), before=next_token),
        )
        if next_token
        else Markup("")
    )
    body = html(
        "<h1>Runs</h1>{form}"
        '<table class="runs"><thead><tr><th>#</th><th>Pipeline</th><th>Status</th>'
        "<th>Stages</th><th>Ref</th><th>Commit</th><th>Trigger</th><th>Created</th>"
        '<th>Duration</th></tr></thead><tbody id="runs-body" data-live="{live}">{rows}</tbody>'
        "</table>{older}",
        form=form,
        live=live,
        rows=rows(runs),
        older=older,
    )
    return layout(view, "Runs", body, section="Runs")
