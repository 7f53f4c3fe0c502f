"""A reporting stage's findings made final (fingerprints, baseline), its
report, and the outcome the gate decides."""

from __future__ import annotations

from pathlib import Path

import trio

from conveyor.plugin import Finding, StageContext, StageOutcome, StageReport, StageStatus
from conveyor.plugins.reporting.log import findings_summary, log_findings
from conveyor.plugins.reports import Baseline, apply_baseline, finding_counts, with_fingerprints


async def settle_findings(
    findings: list[Finding], workspace: Path, baseline: Baseline | None = None
) -> list[Finding]:
    """The findings with their fingerprints (which read the source lines
    they point at) and, given a baseline, marked as baselined where it
    accepts them. In a worker thread: it reads files and grows with the
    number of findings."""

    def settle() -> list[Finding]:
        settled = with_fingerprints(findings, workspace)
        return apply_baseline(settled, baseline) if baseline is not None else settled

    return await trio.to_thread.run_sync(settle)


def span_attributes(report: StageReport) -> dict[str, str | int | float | bool]:
    """Summary numbers for the stage's span: ``conveyor.report.findings``,
    ``conveyor.report.findings.high``, ``conveyor.report.tests.failed``..."""
    noun = "tests" if report.kind == "test" else "findings"
    attributes: dict[str, str | int | float | bool] = {
        "conveyor.report.kind": report.kind,
        "conveyor.report.gate.passed": report.gate_passed,
    }
    for key, value in sorted(report.counts.items()):
        name = f"conveyor.report.{noun}" if key == "total" else f"conveyor.report.{noun}.{key}"
        attributes[name] = value
    return attributes


def finish(report: StageReport, *, exit_code: int | None = None) -> StageOutcome:
    """The outcome of a stage whose gate decided."""
    status = StageStatus.SUCCEEDED if report.gate_passed else StageStatus.FAILED
    return StageOutcome(
        status,
        report.gate_reason,
        exit_code,
        error_type="" if report.gate_passed else "gate",
        span_attributes=span_attributes(report),
        report=report,
    )


async def finish_findings(
    ctx: StageContext,
    kind: str,
    findings: list[Finding],
    gate: tuple[bool, str],
    sources: list[str],
    exit_code: int | None,
) -> StageOutcome:
    """The outcome of a findings stage (lint, scan): the report (its findings
    in gate order), a summary and the findings in the log."""
    passed, reason = gate
    report = StageReport(
        kind=kind,
        counts=finding_counts(findings),
        findings=sorted(findings, key=Finding.relevance),
        gate_passed=passed,
        gate_reason=reason,
        sources=sources,
    )
    await ctx.log_line(
        f"{kind}: {findings_summary(report.counts)} from {', '.join(sources)};"
        f" gate {'passed' if passed else 'failed'}: {reason}"
    )
    await log_findings(ctx, findings)
    return finish(report, exit_code=exit_code)
