"""Gate order: the findings a gate fails on first, the same order in the
plugins' log, the daemon's store and ``conveyor show``; what the store keeps
when a report is too long; the test kind's re-run line."""

from __future__ import annotations

import itertools
import random

from conveyor.client import render
from conveyor.daemon import reports
from conveyor.daemon.api.convert import report_message
from conveyor.daemon.reports import MAX_ITEMS, Finding, StageReport, severity_rank
from conveyor.plugins.reports import mark_lint_gate, mark_scan_gate, scan_gate
from conveyor.plugins.test import rerun_summary

SEVERITIES = ["critical", "high", "medium", "low", "error", "warning", "note", "custom"]


def assorted_findings() -> list[Finding]:
    """Every combination of severity, baseline and place, shuffled."""
    findings = [
        Finding(
            tool="t",
            rule=f"R{n}",
            severity=severity,
            file=file,
            line=line,
            baselined=baselined,
        )
        for n, (severity, baselined, file, line) in enumerate(
            itertools.product(SEVERITIES, (False, True), ("b.py", "a.py"), (7, 3))
        )
    ]
    random.Random(8).shuffle(findings)
    return findings


def test_the_daemon_and_the_client_order_findings_alike() -> None:
    for marked in (
        mark_scan_gate(assorted_findings(), "high"),
        mark_lint_gate(assorted_findings(), ["warning"]),
    ):
        stored = sorted(marked, key=Finding.relevance)
        served = report_message(StageReport(kind="scan", findings=marked)).findings
        shown = render.ordered_findings(served)
        assert [(f.rule, f.fails_gate) for f in shown] == [(f.rule, f.fails_gate) for f in stored]


def test_gate_order_is_failing_then_not_baselined_worst_first_then_file_and_line() -> None:
    ordered = sorted(mark_scan_gate(assorted_findings(), "high"), key=Finding.relevance)
    keys = [
        (not f.fails_gate, f.baselined, severity_rank(f.severity), f.file, f.line) for f in ordered
    ]
    assert keys == sorted(keys)
    # critical, high and error (as high), then a severity no kind knows, which
    # the scan gate fails on as critical but which ranks last
    failing = [f.severity for f in ordered if f.fails_gate]
    assert failing[:4] == ["critical"] * 4 and failing[12:] == ["custom"] * 4
    assert sorted(failing[4:12]) == ["error"] * 4 + ["high"] * 4
    assert sorted(f.severity for f in ordered[16:24]) == ["medium"] * 4 + ["warning"] * 4
    assert not any(f.baselined for f in ordered[:32]) and all(f.baselined for f in ordered[32:])


def test_a_lint_gate_marks_exactly_its_levels() -> None:
    marked = mark_lint_gate(assorted_findings(), ["note"])
    assert {f.severity for f in marked if f.fails_gate} == {"note"}
    assert not any(f.fails_gate and f.baselined for f in marked)


def test_the_gate_reason_names_the_first_failing_finding() -> None:
    findings = [
        Finding(tool="bandit", rule="B101", severity="low", file="a.py", line=1),
        Finding(tool="bandit", rule="B105", severity="high", file="src/auth.py", line=12),
        Finding(tool="bandit", rule="B602", severity="high", file="src/run.py", line=2),
        Finding(tool="bandit", rule="B105", severity="high", file="src/auth.py", line=30),
        Finding(tool="x", rule="", severity="critical", file="src/z.py", baselined=True),
    ]
    assert scan_gate(findings, "high") == (
        False,
        "3 findings at or above high (B105 x2, B602); first: src/auth.py:12 B105; 1 baselined",
    )


def test_a_report_too_long_keeps_the_findings_its_gate_failed_on() -> None:
    low = [
        Finding(tool="bandit", rule="B101", severity="low", file=f"a/{n:04}.py", line=1)
        for n in range(MAX_ITEMS + 500)
    ]
    failing = [
        Finding(tool="bandit", rule="B105", severity="high", file="z.py", line=n, fails_gate=True)
        for n in (9, 4)
    ]
    report = StageReport(kind="scan", findings=[*low, *failing]).capped()
    assert report.findings[:2] == sorted(failing, key=Finding.relevance)
    assert len(report.findings) == MAX_ITEMS and report.truncated == 502
    assert report.findings[2:] == low[: MAX_ITEMS - 2]


def test_a_report_too_long_keeps_failed_tests_before_skipped_ones() -> None:
    skipped = [reports.TestCaseResult(f"t.skip{n}", "skipped") for n in range(MAX_ITEMS)]
    failed = [
        reports.TestCaseResult("t.broken", "failed"),
        reports.TestCaseResult("t.crash", "error"),
    ]
    flaky = [reports.TestCaseResult("t.flaky", "flaky")]
    report = StageReport(kind="test", tests=[*skipped, *flaky, *failed]).capped()
    assert report.tests[:3] == [*failed, *flaky]
    assert report.truncated == 3


def test_the_rerun_line_counts_failed_and_errored_tests_apart() -> None:
    assert rerun_summary(["failed"] * 3 + ["error"] * 2) == "3 failed and 2 errored tests"
    assert rerun_summary(["error"] * 5) == "5 errored tests"
    assert rerun_summary(["failed"]) == "1 failed test"
