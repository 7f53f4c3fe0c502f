"""Plain-text and JSON rendering of API messages for the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

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
    return commit[:10]


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
            run.id,
            f"#{run.number}",
            run.pipeline,
            run_status_name(run.status),
            run.ref,
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
            stage.name,
            stage_status_name(stage.status),
            str(stage.attempt) if stage.attempt else "-",
            str(stage.exit_code) if stage.HasField("exit_code") else "-",
            format_duration(ts_span(stage.started_at, stage.finished_at, now)),
            stage.reason,
        ]
        for stage in stages
    ]
    return table(headers, rows)


def run_detail(run: runs_pb2.Run, now: float | None = None) -> list[str]:
    status = run_status_name(run.status)
    if run.reason:
        status += f" ({run.reason})"
    fields = [
        ("status", status),
        ("repository", run.repository),
        ("ref", run.ref),
        ("commit", run.commit),
        ("pipeline file", run.pipeline_path),
        ("trigger", trigger_name(run.trigger)),
        ("created", format_time(run.created_at)),
        ("started", format_time(run.started_at)),
        ("finished", format_time(run.finished_at)),
        ("duration", format_duration(run_duration(run, now))),
    ]
    if run.concurrency_group:
        fields.append(("concurrency", run.concurrency_group))
    if run.trace_id:
        fields.append(("trace", run.trace_id))
    lines = [f"run {run.id}  #{run.number} {run.pipeline}"]
    lines += [f"  {label + ':':<15}{value}" for label, value in fields]
    if run.stages:
        lines.append("")
        lines += stage_rows(run.stages, now)
        for stage in run.stages:
            if stage.HasField("report"):
                lines.append("")
                lines += stage_report(stage.name, stage.report)
    return lines


# -- stage reports (lint, test, scan) ----------------------------------------

#: Findings or tests listed per stage by `show`; the rest are counted.
REPORT_ITEMS = 20
#: Severities from worst to mildest: scans, then lint levels.
SEVERITY_ORDER = ("critical", "high", "medium", "low", "error", "warning", "note")
TEST_COUNT_ORDER = ("passed", "failed", "errors", "skipped", "flaky")
_CONTROL = {c: "?" for c in [*range(0x20), 0x7F]}
MESSAGE_WIDTH = 200


def _one_line(text: str) -> str:
    """The first line of a tool's message, without control characters
    (no terminal escapes from reports), shortened."""
    lines = text.strip().splitlines()
    line = lines[0].translate(_CONTROL) if lines else ""
    return line if len(line) <= MESSAGE_WIDTH else line[: MESSAGE_WIDTH - 3] + "..."


def report_counts(report: runs_pb2.StageReport) -> str:
    """``3 findings (high 1, medium 2; 1 baselined)`` or
    ``4 tests: 2 passed, 1 failed, 1 flaky``."""
    counts = dict(report.counts)
    if report.kind not in ("lint", "scan", "test") and not report.findings and not report.tests:
        # a plugin's own report: its counts as they are ("changes 3")
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no counts"
    total = counts.pop("total", None)
    if report.kind == "test" or (report.tests and not report.findings):
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
    order = [k for k in SEVERITY_ORDER if counts.get(k)]
    order += sorted(k for k in counts if k not in SEVERITY_ORDER and counts[k])
    detail = ", ".join(f"{k} {counts[k]}" for k in order)
    if baselined:
        detail += ("; " if detail else "") + f"{baselined} baselined"
    noun = "finding" if total == 1 else "findings"
    return f"{total} {noun}" + (f" ({detail})" if detail else "")


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
        rows.append([_one_line(where), f.severity, _one_line(rule), message])
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [
        "  " + "  ".join([*(c.ljust(widths[i]) for i, c in enumerate(r[:3])), r[3]]).rstrip()
        for r in rows
    ]


def stage_report(name: str, report: runs_pb2.StageReport) -> list[str]:
    """A stage's report for `show`: counts and gate, then the findings (not
    baselined first) or the tests that did not pass, at most
    :data:`REPORT_ITEMS`."""
    gate = "passed" if report.gate_passed else "failed"
    if report.gate_reason:
        gate += f": {_one_line(report.gate_reason)}"
    lines = [f"{name} ({report.kind or 'report'}): {report_counts(report)}; gate {gate}"]
    if report.kind == "test" or (report.tests and not report.findings):
        listed = [t for t in report.tests if t.outcome != "skipped"]
        shown = [
            f"  {t.outcome}  {_one_line(t.name)}"
            + (f": {_one_line(t.message)}" if t.message.strip() else "")
            for t in listed[:REPORT_ITEMS]
        ]
        more = len(listed) - len(shown) + report.truncated
    else:
        ordered = sorted(report.findings, key=lambda f: f.baselined)
        shown = finding_rows(ordered[:REPORT_ITEMS])
        more = len(ordered) - len(shown) + report.truncated
    lines += shown
    if more > 0:
        lines.append(f"  ... {more} more")
    return lines


def submitted(response: runs_pb2.SubmitRunResponse) -> str:
    run = response.run
    verb = "submitted" if response.created else "already submitted (same idempotency key)"
    return (
        f"run {run.id} #{run.number} {run.pipeline} {verb}: "
        f"{run.ref} at commit {short_commit(run.commit)}"
    )


# -- pipelines, plugins, server --------------------------------------------


def diagnostic_line(diag: pipelines_pb2.Diagnostic, default_file: str) -> str:
    where = diag.file or default_file
    if diag.line:
        where += f":{diag.line}:{diag.column}"
    parts = [where]
    if diag.severity == pipelines_pb2.SEVERITY_WARNING:
        parts.append("warning")
    if diag.path:
        parts.append(diag.path)
    parts.append(diag.message)
    return ": ".join(parts)


def validation(response: pipelines_pb2.ValidatePipelineResponse, file: str) -> list[str]:
    lines = [diagnostic_line(d, file) for d in response.diagnostics]
    if response.valid:
        order = list(response.stage_order)
        plural = "stage" if len(order) == 1 else "stages"
        lines.append(f"{file}: valid ({len(order)} {plural}: {', '.join(order)})")
    return lines


def plugins_table(plugins: Sequence[server_pb2.Plugin]) -> list[str]:
    headers = ["NAME", "DISTRIBUTION", "VERSION", "PROVIDES", "HOOKS"]
    lines = table(
        headers,
        (
            [p.name, p.distribution, p.version, ", ".join(p.provides), ", ".join(p.hooks)]
            for p in plugins
        ),
    )
    out = [lines[0]]
    for plugin, line in zip(plugins, lines[1:], strict=True):
        out.append(line)
        if plugin.error:
            out.append(f"  error: {plugin.error}")
    return out


def server_status(
    status: server_pb2.GetServerStatusResponse, address: str, now: float | None = None
) -> list[str]:
    started = status.started_at
    uptime = format_duration(ts_span(started, Timestamp(), now))
    return [
        f"conveyord {status.version or '(unknown version)'} at {address}",
        f"  up since:      {format_time(started)} ({uptime})",
        f"  runs:          {status.queued_runs} queued, {status.active_runs} active"
        f" (max {status.max_concurrent_runs or 'unlimited'})",
        f"  stages:        {status.active_stages} active",
        f"  streams:       {status.active_streams} open",
        f"  spans:         {status.spans_ended} ended, {status.spans_exported} exported,"
        f" {status.spans_failed} failed, {status.spans_dropped} dropped"
        f" (exporters: {', '.join(status.trace_exporters) or 'none'})",
    ]
