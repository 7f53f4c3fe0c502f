"""A run: what it built, its stage graph, its timings, each stage's status
and parsed report. The parts that change while it runs are rendered on
their own too (:func:`parts`), for the page's live updates."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.daemon.records import EventRecord, RunRecord, StageRecord
from conveyor.daemon.reports import StageReport
from conveyor.daemon.web.html import Markup, html, join, url
from conveyor.daemon.web.pages import dag
from conveyor.daemon.web.pages.common import View, badge, duration, layout, link, moment
from conveyor.daemon.web.pages.gantt import gantt

#: Findings and tests listed per report (the rest are counted).
MAX_LISTED = 200


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def head(run: RunRecord) -> Markup:
    reason = (
        html('<p class="reason" data-status="{}">{}</p>', run.status, run.reason)
        if run.reason
        else Markup("")
    )
    return html(
        '<h1>Run #{number} <span class="muted">{pipeline}</span> {status}</h1>{reason}'
        '<dl class="facts">'
        "<dt>Repository</dt><dd>{repository}</dd>"
        "<dt>Ref</dt><dd>{ref}</dd>"
        '<dt>Commit</dt><dd class="mono">{commit}</dd>'
        "<dt>Trigger</dt><dd>{trigger}</dd>"
        "<dt>Version</dt><dd>{version}</dd>"
        "<dt>Created</dt><dd>{created}</dd>"
        "<dt>Started</dt><dd>{started}</dd>"
        "<dt>Finished</dt><dd>{finished}</dd>"
        "<dt>Duration</dt><dd>{took}</dd>"
        '<dt>Trace id</dt><dd class="mono">{trace}</dd>'
        '<dt>Run id</dt><dd class="mono">{id}</dd>'
        "</dl>",
        number=str(run.number),
        pipeline=run.pipeline,
        status=badge(run.status),
        reason=reason,
        repository=run.repository,
        ref=f"{run.ref} ({run.ref_type})" if run.ref_type else run.ref,
        commit=run.commit,
        trigger=f"{run.trigger} by {run.submitted_by}" if run.submitted_by else run.trigger,
        version=run.version or "-",
        created=moment(run.created_at),
        started=moment(run.started_at),
        finished=moment(run.finished_at),
        took=duration(run.started_at, run.finished_at),
        trace=run.trace_id or "-",
        id=run.id,
    )


def stage_rows(run: RunRecord) -> Markup:
    return join(
        html(
            '<tr data-stage="{index}"><td>{name}</td><td>{kind}</td><td>{status}</td>'
            '<td class="num">{attempt}</td><td class="num">{exit}</td><td>{started}</td>'
            '<td class="num">{took}</td><td class="num">{log}</td><td class="reason">{reason}</td>'
            "</tr>",
            index=str(index),
            name=link(stage.name, "runs", run.id, "stages", stage.name),
            kind=stage.kind,
            status=badge(stage.status),
            attempt=str(stage.attempt) if stage.attempt else "-",
            exit=str(stage.exit_code) if stage.exit_code is not None else "-",
            started=moment(stage.started_at),
            took=duration(stage.started_at, stage.finished_at),
            log=human_size(stage.log_size),
            reason=stage.reason,
        )
        for index, stage in enumerate(run.stages)
    )


def stages_table(run: RunRecord) -> Markup:
    return html(
        '<table class="stages"><thead><tr><th>Stage</th><th>Kind</th><th>Status</th>'
        "<th>Attempt</th><th>Exit</th><th>Started</th><th>Duration</th><th>Log</th>"
        "<th>Reason</th></tr></thead><tbody>{}</tbody></table>",
        stage_rows(run),
    )


def report_section(run: RunRecord, stage: StageRecord, report: StageReport) -> Markup:
    gate = (
        html(
            '<span class="badge" data-status="succeeded">gate passed</span> {}', report.gate_reason
        )
        if report.gate_passed
        else html(
            '<span class="badge" data-status="failed">gate failed</span> {}', report.gate_reason
        )
    )
    counts = join(
        html('<span class="count">{} <b>{}</b></span>', name.replace("_", " "), str(value))
        for name, value in sorted(report.counts.items())
    )
    findings = Markup("")
    if report.findings:
        listed = report.findings[:MAX_LISTED]
        findings = html(
            '<table class="findings"><thead><tr><th>Severity</th><th>Rule</th><th>Where</th>'
            "<th>Message</th><th></th></tr></thead><tbody>{}</tbody></table>{}",
            join(
                html(
                    '<tr{}><td><span class="sev" data-severity="{}">{}</span></td><td>{} {}</td>'
                    '<td class="mono">{}</td><td>{}</td><td>{}</td></tr>',
                    Markup(' class="fails"') if f.fails_gate else "",
                    f.severity.lower(),
                    f.severity,
                    f.tool,
                    f.rule,
                    f"{f.file}:{f.line}" if f.line else f.file,
                    f.message,
                    "baselined" if f.baselined else ("fails the gate" if f.fails_gate else ""),
                )
                for f in listed
            ),
            _more(len(report.findings) - len(listed) + report.truncated, "findings"),
        )
    tests = Markup("")
    if report.tests:
        listed_tests = report.tests[:MAX_LISTED]
        tests = html(
            '<table class="tests"><thead><tr><th>Outcome</th><th>Test</th><th>Message</th>'
            "<th>Time</th></tr></thead><tbody>{}</tbody></table>{}",
            join(
                html(
                    '<tr><td><span class="badge" data-status="{}">{}</span></td><td>{}</td>'
                    '<td class="reason">{}</td><td class="num">{}</td></tr>',
                    "failed" if t.outcome in ("failed", "error") else t.outcome,
                    t.outcome,
                    t.name,
                    t.message,
                    f"{t.duration_seconds:.2f}s",
                )
                for t in listed_tests
            ),
            _more(len(report.tests) - len(listed_tests), "tests"),
        )
    return html(
        '<section class="report" id="report-{index}">'
        '<h3>{name} <span class="muted">{kind}</span></h3>'
        '<p>{gate}</p><p class="counts">{counts}</p>{findings}{tests}</section>',
        index=str(run.stages.index(stage)),
        name=link(stage.name, "runs", run.id, "stages", stage.name),
        kind=report.kind,
        gate=gate,
        counts=counts,
        findings=findings,
        tests=tests,
    )


def _more(count: int, what: str) -> Markup:
    if count <= 0:
        return Markup("")
    return html(
        '<p class="muted">and {} more {} (see <code>conveyor show</code>)</p>', str(count), what
    )


def reports(run: RunRecord) -> Markup:
    sections = [report_section(run, s, s.report) for s in run.stages if s.report is not None]
    if not sections:
        return Markup('<p class="muted">No stage has reported results yet.</p>')
    return join(sections)


def parts(run: RunRecord, events: Sequence[EventRecord]) -> dict[str, Markup]:
    """The parts of the page that change while the run runs, by element id."""
    return {
        "run-head": head(run),
        "dag": dag.svg(run.id, run.stages),
        "gantt": gantt(run, events),
        "stages": stages_table(run),
        "reports": reports(run),
    }


def run_page(view: View, run: RunRecord, events: Sequence[EventRecord]) -> Markup:
    live = "" if run.status.finished else url("runs", run.id, "live")
    sections = parts(run, events)
    body = html(
        '<div id="run" data-live="{live}" data-seq="{seq}">'
        '<p class="crumbs"><a href="/">Runs</a> / #{number}</p>'
        '<div id="run-head">{head}</div>'
        '<h2>Stages</h2><div id="dag" class="scroll">{dag}</div>'
        '<h2>Timings</h2><div id="gantt">{gantt}</div>'
        '<div id="stages">{stages}</div>'
        '<h2>Reports</h2><div id="reports">{reports}</div></div>',
        live=live,
        seq=str(run.last_event_seq),
        number=str(run.number),
        head=sections["run-head"],
        dag=sections["dag"],
        gantt=sections["gantt"],
        stages=sections["stages"],
        reports=sections["reports"],
    )
    return layout(view, f"Run #{run.number} {run.pipeline}", body, section="Runs")
