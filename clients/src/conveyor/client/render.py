"""Plain-text and JSON rendering of API messages for the CLI.

Every string from the daemon goes through :func:`~conveyor.client.terminal.printable`
before it is laid out, so control characters are shown, never acted on.
JSON output is left as the daemon sent it (``json.dumps`` escapes controls).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from conveyor.client import severity
from conveyor.client.terminal import printable
from conveyor.v1 import pipelines_pb2, runs_pb2, server_pb2

RUN_TERMINAL = frozenset(
    {
        runs_pb2.RUN_STATUS_SUCCEEDED,
        runs_pb2.RUN_STATUS_FAILED,
        runs_pb2.RUN_STATUS_CANCELLED,
        runs_pb2.RUN_STATUS_TIMED_OUT,
        runs_pb2.RUN_STATUS_INTERRUPTED,
    }
)
STAGE_TERMINAL = frozenset(
    {
        runs_pb2.STAGE_STATUS_SUCCEEDED,
        runs_pb2.STAGE_STATUS_FAILED,
        runs_pb2.STAGE_STATUS_CANCELLED,
        runs_pb2.STAGE_STATUS_TIMED_OUT,
        runs_pb2.STAGE_STATUS_SKIPPED,
        runs_pb2.STAGE_STATUS_INTERRUPTED,
    }
)

#: Findings or tests listed per stage by `show`; the rest are counted.
REPORT_ITEMS = 20
#: `limit` of :func:`stage_report` that lists everything.
ALL = 0


def _enum_label(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def run_status_name(value: int) -> str:
    """`RUN_STATUS_SUCCEEDED` -> "succeeded"."""
    try:
        return _enum_label(runs_pb2.RunStatus.Name(value), "RUN_STATUS_")  # type: ignore[arg-type]
    except ValueError:
        return str(value)


def stage_status_name(value: int) -> str:
    try:
        return _enum_label(runs_pb2.StageStatus.Name(value), "STAGE_STATUS_")  # type: ignore[arg-type]
    except ValueError:
        return str(value)


def trigger_name(value: int) -> str:
    try:
        return _enum_label(runs_pb2.TriggerKind.Name(value), "TRIGGER_KIND_")  # type: ignore[arg-type]
    except ValueError:
        return str(value)


def run_status_value(name: str) -> runs_pb2.RunStatus.ValueType:
    """Inverse of `run_status_name`; raises ValueError for unknown names."""
    return runs_pb2.RunStatus.Value("RUN_STATUS_" + name.upper().replace("-", "_"))


def run_status_choices() -> list[str]:
    return [run_status_name(v) for v in runs_pb2.RunStatus.values() if v != 0]


def ts_seconds(ts: Timestamp) -> float | None:
    """Seconds since the epoch, or None when the timestamp is unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.seconds + ts.nanos / 1e9


def format_duration(seconds: float | None) -> str:
    """1.2s, 3m04s, 2h05m; "-" when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def span(started: float | None, finished: float | None, now: float | None = None) -> float | None:
    """Duration of something that started (and maybe finished); elapsed while running."""
    if started is None:
        return None
    end = finished if finished is not None else (time.time() if now is None else now)
    return end - started


def ts_span(started: Timestamp, finished: Timestamp, now: float | None = None) -> float | None:
    return span(ts_seconds(started), ts_seconds(finished), now)


def format_time(ts: Timestamp) -> str:
    """Local date and time, "-" when unset."""
    seconds = ts_seconds(ts)
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def format_clock(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def short_commit(commit: str) -> str:
    return printable(commit[:10])


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces; the last one is not padded."""
    all_rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


# -- JSON ------------------------------------------------------------------


def message_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def to_json(value: Message | Sequence[Message]) -> str:
    data: Any = (
        message_dict(value) if isinstance(value, Message) else [message_dict(m) for m in value]
    )
    return json.dumps(data, indent=2)


# -- runs ------------------------------------------------------------------


def run_duration(run: runs_pb2.Run, now: float | None = None) -> float | None:
    return ts_span(run.started_at, run.finished_at, now)


def runs_table(runs: Sequence[runs_pb2.Run], now: float | None = None) -> list[str]:
    headers = ["ID", "#", "PIPELINE", "STATUS", "REF", "COMMIT", "CREATED", "DURATION"]
    rows = [
        [
            printable(run.id),
            f"#{run.number}",
            printable(run.pipeline),
            run_status_name(run.status),
            printable(run.ref),
            short_commit(run.commit),
            format_time(run.created_at),
            format_duration(run_duration(run, now)),
        ]
        for run in runs
    ]
    return table(headers, rows)


def stage_rows(stages: Iterable[runs_pb2.Stage], now: float | None = None) -> list[str]:
    headers = ["STAGE", "STATUS", "ATTEMPT", "EXIT", "DURATION", "REASON"]
    rows = [
        [
            printable(stage.name),
            stage_status_name(stage.status),
            str(stage.attempt) if stage.attempt else "-",
            str(stage.exit_code) if stage.HasField("exit_code") else "-",
            format_duration(ts_span(stage.started_at, stage.finished_at, now)),
            printable(stage.reason),
        ]
        for stage in stages
    ]
    return table(headers, rows)


def run_detail(
    run: runs_pb2.Run,
    now: float | None = None,
    *,
    limit: int = REPORT_ITEMS,
    min_severity: str | None = None,
) -> list[str]:
    """`conveyor show`: the run's fields, its stages, then each stage's
    report (see :func:`stage_report` for ``limit`` and ``min_severity``)."""
    status = run_status_name(run.status)
    if run.reason:
        status += f" ({printable(run.reason)})"
    fields = [
        ("status", status),
        ("repository", printable(run.repository)),
        ("ref", printable(run.ref)),
        ("commit", printable(run.commit)),
        ("pipeline file", printable(run.pipeline_path)),
        ("trigger", trigger_name(run.trigger)),
        ("submitted by", printable(run.submitted_by) or "-"),
        ("created", format_time(run.created_at)),
        ("started", format_time(run.started_at)),
        ("finished", format_time(run.finished_at)),
        ("duration", format_duration(run_duration(run, now))),
    ]
    if run.version:
        fields.insert(4, ("version", printable(run.version)))
    if run.concurrency_group:
        fields.append(("concurrency", printable(run.concurrency_group)))
    if run.trace_id:
        fields.append(("trace", printable(run.trace_id)))
    lines = [f"run {printable(run.id)}  #{run.number} {printable(run.pipeline)}"]
    lines += [f"  {label + ':':<15}{value}" for label, value in fields]
    if run.stages:
        lines.append("")
        lines += stage_rows(run.stages, now)
        for stage in run.stages:
            if stage.HasField("report"):
                lines.append("")
                lines += stage_report(
                    stage.name,
                    stage.report,
                    limit=limit,
                    min_severity=min_severity,
                    run_id=run.id,
                )
    return lines


# -- stage reports (lint, test, scan) ----------------------------------------

TEST_COUNT_ORDER = ("passed", "failed", "errors", "skipped", "flaky")
#: Test outcomes in the order `show` lists them: what fails a gate first.
_OUTCOME_ORDER = {"failed": 0, "error": 0, "flaky": 1, "skipped": 3}
MESSAGE_WIDTH = 200


def _one_line(text: str) -> str:
    """The first line of a tool's message, control characters escaped
    (no terminal escapes from reports), shortened."""
    line = printable(text.strip().split("\n", 1)[0].rstrip())
    return line if len(line) <= MESSAGE_WIDTH else line[: MESSAGE_WIDTH - 3] + "..."


def is_test_report(report: runs_pb2.StageReport) -> bool:
    return report.kind == "test" or bool(report.tests and not report.findings)


def report_counts(report: runs_pb2.StageReport) -> str:
    """``3 findings (high 1, medium 2; 1 baselined)`` or
    ``4 tests: 2 passed, 1 failed, 1 flaky``."""
    counts = {printable(k): v for k, v in report.counts.items()}
    if report.kind not in ("lint", "scan", "test") and not report.findings and not report.tests:
        # a plugin's own report: its counts as they are ("changes 3")
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no counts"
    total = counts.pop("total", None)
    if is_test_report(report):
        if total is None:
            total = sum(counts.get(k, 0) for k in TEST_COUNT_ORDER)
        known = [k for k in TEST_COUNT_ORDER if counts.get(k)]
        others = sorted(k for k in counts if k not in TEST_COUNT_ORDER and counts[k])
        parts = [f"{counts[k]} {k}" for k in [*known, *others]]
        noun = "test" if total == 1 else "tests"
        return f"{total} {noun}" + (f": {', '.join(parts)}" if parts else "")
    baselined = counts.pop("baselined", 0)
    if total is None:
        total = len(report.findings) + report.truncated
    order = sorted((k for k in counts if counts[k]), key=lambda k: (severity.rank(k), k))
    detail = ", ".join(f"{k} {counts[k]}" for k in order)
    if baselined:
        detail += ("; " if detail else "") + f"{baselined} baselined"
    noun = "finding" if total == 1 else "findings"
    return f"{total} {noun}" + (f" ({detail})" if detail else "")


def ordered_findings(findings: Iterable[runs_pb2.Finding]) -> list[runs_pb2.Finding]:
    """Findings by gate relevance: those that fail the gate first, then those
    not baselined, then by severity, worst first (unknown severities last),
    then by file and line. The daemon stores and the built-in kinds log them
    in the same order (``Finding.relevance`` in ``conveyor.daemon.reports``)."""
    return sorted(
        findings,
        key=lambda f: (
            not f.fails_gate,
            f.baselined,
            severity.rank(f.severity),
            f.file,
            f.line,
            f.column,
        ),
    )


def ordered_tests(tests: Iterable[runs_pb2.TestCaseResult]) -> list[runs_pb2.TestCaseResult]:
    """Failed and errored tests first, then flaky ones, then skipped ones;
    in report order otherwise."""
    return sorted(tests, key=lambda t: _OUTCOME_ORDER.get(t.outcome, 2))


def finding_rows(findings: Sequence[runs_pb2.Finding]) -> list[str]:
    """``file:line:col  severity  tool/rule  message``, columns aligned."""
    rows = []
    for f in findings:
        where = f.file or "-"
        if f.line:
            where += f":{f.line}" + (f":{f.column}" if f.column else "")
        rule = f"{f.tool}/{f.rule}" if f.rule else f.tool
        message = _one_line(f.message)
        if f.baselined:
            message = "(baselined) " + message
        elif f.fails_gate:
            message = "(fails gate) " + message
        rows.append([_one_line(where), _one_line(f.severity), _one_line(rule), message])
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [
        "  " + "  ".join([*(c.ljust(widths[i]) for i, c in enumerate(r[:3])), r[3]]).rstrip()
        for r in rows
    ]


def testcase_rows(tests: Sequence[runs_pb2.TestCaseResult]) -> list[str]:
    """``outcome  name: first line of the message``."""
    return [
        f"  {_one_line(t.outcome)}  {_one_line(t.name)}"
        + (f": {_one_line(t.message)}" if t.message.strip() else "")
        for t in tests
    ]


def stage_report(
    name: str,
    report: runs_pb2.StageReport,
    *,
    limit: int = REPORT_ITEMS,
    min_severity: str | None = None,
    run_id: str = "",
) -> list[str]:
    """A stage's report for `show`: counts and gate, then at most ``limit``
    findings (:data:`ALL`: every one) ordered by :func:`ordered_findings`,
    only those at or above ``min_severity``, or the tests that did not pass
    (:func:`ordered_tests`; skipped ones only with :data:`ALL`). Then how
    many were left out, and how to see them."""
    gate = "passed" if report.gate_passed else "failed"
    if report.gate_reason:
        gate += f": {_one_line(report.gate_reason)}"
    kind = printable(report.kind) or "report"
    lines = [f"{printable(name)} ({kind}): {report_counts(report)}; gate {gate}"]
    below = 0
    if is_test_report(report):
        tests = ordered_tests(t for t in report.tests if limit == ALL or t.outcome != "skipped")
        listed = len(tests)
        lines += testcase_rows(tests if limit == ALL else tests[:limit])
    else:
        ordered = ordered_findings(report.findings)
        findings = [f for f in ordered if severity.at_least(f.severity, min_severity)]
        below, listed = len(ordered) - len(findings), len(findings)
        lines += finding_rows(findings if limit == ALL else findings[:limit])
    hidden = 0 if limit == ALL else max(0, listed - limit)
    if hidden:
        command = f"conveyor show {printable(run_id) or 'RUN'} --findings all"
        if min_severity:
            command += f" --severity {min_severity}"
        lines.append(f"  ... and {hidden} more; {command}")
    if below:
        lines.append(f"  ({below} below {min_severity} not shown)")
    if report.truncated:
        lines.append(f"  ... and {report.truncated} more not kept in the report")
    return lines


def submitted(response: runs_pb2.SubmitRunResponse) -> str:
    run = response.run
    verb = "submitted" if response.created else "already submitted (same idempotency key)"
    return (
        f"run {printable(run.id)} #{run.number} {printable(run.pipeline)} {verb}: "
        f"{printable(run.ref)} at commit {short_commit(run.commit)}"
    )


# -- pipelines, plugins, server --------------------------------------------


def _indented(first: str, text: str, indent: str = "  ") -> list[str]:
    """``first`` followed by the first line of ``text``, its other lines
    indented (text printed over several lines on purpose, escaped)."""
    head, *rest = printable(text, multiline=True).split("\n")
    return [first + head, *(indent + line for line in rest)]


def diagnostic_lines(diag: pipelines_pb2.Diagnostic, default_file: str) -> list[str]:
    """``file:line:column: [warning: ]path: message``, a message of several
    lines continued on indented lines."""
    where = printable(diag.file or default_file)
    if diag.line:
        where += f":{diag.line}:{diag.column}"
    parts = [where]
    if diag.severity == pipelines_pb2.SEVERITY_WARNING:
        parts.append("warning")
    if diag.path:
        parts.append(printable(diag.path))
    return _indented(": ".join(parts) + ": ", diag.message)


def validation(response: pipelines_pb2.ValidatePipelineResponse, file: str) -> list[str]:
    lines = [line for d in response.diagnostics for line in diagnostic_lines(d, file)]
    if response.valid:
        order = [printable(name) for name in response.stage_order]
        plural = "stage" if len(order) == 1 else "stages"
        lines.append(f"{printable(file)}: valid ({len(order)} {plural}: {', '.join(order)})")
    return lines


def plugins_table(plugins: Sequence[server_pb2.Plugin]) -> list[str]:
    headers = ["NAME", "DISTRIBUTION", "VERSION", "PROVIDES", "HOOKS"]
    lines = table(
        headers,
        (
            [
                printable(p.name),
                printable(p.distribution),
                printable(p.version),
                printable(", ".join(p.provides)),
                printable(", ".join(p.hooks)),
            ]
            for p in plugins
        ),
    )
    out = [lines[0]]
    for plugin, line in zip(plugins, lines[1:], strict=True):
        out.append(line)
        if plugin.error:
            out += _indented("  error: ", plugin.error, "    ")
    return out


def server_status(
    status: server_pb2.GetServerStatusResponse, address: str, now: float | None = None
) -> list[str]:
    started = status.started_at
    uptime = format_duration(ts_span(started, Timestamp(), now))
    if status.trace_exporters:
        spans = (
            f"{status.spans_ended} ended, {status.spans_exported} exported,"
            f" {status.spans_failed} failed, {status.spans_dropped} dropped"
            f" (exporters: {printable(', '.join(status.trace_exporters))})"
        )
    else:
        spans = f"{status.spans_ended} ended, not exported (no exporter configured)"
    return [
        f"conveyord {printable(status.version) or '(unknown version)'} at {printable(address)}",
        f"  up since:      {format_time(started)} ({uptime})",
        f"  runs:          {status.queued_runs} queued, {status.active_runs} active"
        f" (max {status.max_concurrent_runs or 'unlimited'})",
        f"  stages:        {status.active_stages} active",
        f"  streams:       {status.active_streams} open",
        f"  spans:         {spans}",
        f"  dashboard:     {printable(status.web_url) or 'off'}",
    ]
