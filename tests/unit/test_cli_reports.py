"""`conveyor show` renders stage reports: counts, gate, findings and tests."""

from __future__ import annotations

import json

from conveyor.client import render
from conveyor.v1 import runs_pb2


def finding(
    file: str = "src/app.py",
    line: int = 1,
    column: int = 8,
    severity: str = "error",
    tool: str = "ruff",
    rule: str = "F401",
    message: str = "`os` imported but unused",
    baselined: bool = False,
) -> runs_pb2.Finding:
    return runs_pb2.Finding(
        tool=tool,
        rule=rule,
        severity=severity,
        file=file,
        line=line,
        column=column,
        message=message,
        baselined=baselined,
        fingerprint="f" * 16,
    )


def make_run(*stages: runs_pb2.Stage) -> runs_pb2.Run:
    return runs_pb2.Run(
        id="r-1",
        number=3,
        pipeline="ci",
        repository="/srv/app",
        ref="main",
        commit="0123456789abcdef0123456789abcdef01234567",
        status=runs_pb2.RUN_STATUS_FAILED,
        stages=list(stages),
    )


def lint_stage() -> runs_pb2.Stage:
    return runs_pb2.Stage(
        name="lint",
        status=runs_pb2.STAGE_STATUS_FAILED,
        attempt=1,
        reason="2 findings at error or warning",
        report=runs_pb2.StageReport(
            kind="lint",
            counts={"total": 3, "error": 2, "warning": 1, "baselined": 1},
            findings=[
                finding(baselined=True, rule="E501", severity="warning", message="line too long"),
                finding(),
                finding(line=12, column=5, rule="F821", message="Undefined name `x`\nmore"),
            ],
            gate_passed=False,
            gate_reason="2 findings at error or warning",
            sources=["ruff.json"],
        ),
    )


def test_lint_report_lists_counts_gate_and_findings_with_baselined_last() -> None:
    lines = render.run_detail(make_run(runs_pb2.Stage(name="build"), lint_stage()))
    start = lines.index(
        "lint (lint): 3 findings (error 2, warning 1; 1 baselined);"
        " gate failed: 2 findings at error or warning"
    )
    assert lines[start + 1 :] == [
        "  src/app.py:1:8   error    ruff/F401  `os` imported but unused",
        "  src/app.py:12:5  error    ruff/F821  Undefined name `x`",
        "  src/app.py:1:8   warning  ruff/E501  (baselined) line too long",
    ]
    assert lines[start - 1] == ""
    # the stage without a report adds nothing after the table
    assert not any(line.startswith("build (") for line in lines)


def test_findings_are_cut_at_twenty_with_a_count_of_the_rest() -> None:
    findings = [finding(line=n, severity="high", tool="bandit", rule="B602") for n in range(1, 26)]
    report = runs_pb2.StageReport(
        kind="scan",
        counts={"total": 1030, "high": 1030},
        findings=findings,
        truncated=1005,
        gate_passed=False,
        gate_reason="1030 findings at high or above",
    )
    lines = render.stage_report("scan", report)
    assert lines[0] == (
        "scan (scan): 1030 findings (high 1030); gate failed: 1030 findings at high or above"
    )
    assert len(lines) == 1 + 20 + 2
    assert lines[1] == "  src/app.py:1:8   high  bandit/B602  `os` imported but unused"
    assert lines[-2:] == [
        "  ... and 5 more; conveyor show RUN --findings all",
        "  ... and 1005 more not kept in the report",
    ]


def test_finding_without_line_or_rule() -> None:
    report = runs_pb2.StageReport(
        kind="scan",
        counts={"total": 1, "low": 1},
        findings=[finding(file="setup.cfg", line=0, column=0, severity="low", rule="", tool="x")],
        gate_passed=True,
        gate_reason="no findings at high or above",
    )
    assert render.stage_report("sec", report) == [
        "sec (scan): 1 finding (low 1); gate passed: no findings at high or above",
        "  setup.cfg  low  x  `os` imported but unused",
    ]


def test_test_report_lists_failed_and_flaky_tests_not_skipped_ones() -> None:
    report = runs_pb2.StageReport(
        kind="test",
        counts={"total": 5, "passed": 2, "failed": 1, "errors": 0, "skipped": 1, "flaky": 1},
        tests=[
            runs_pb2.TestCaseResult(
                name="tests.test_app.test_sum",
                outcome="failed",
                message="AssertionError: assert 3 == 4\n  where 3 = add(1, 2)",
            ),
            runs_pb2.TestCaseResult(
                name="tests.test_app.test_net", outcome="flaky", message="ConnectionError"
            ),
            runs_pb2.TestCaseResult(
                name="tests.test_app.test_gpu", outcome="skipped", message="no GPU"
            ),
        ],
        gate_passed=False,
        gate_reason="1 test failed",
        sources=["junit.xml", "rerun-1/junit.xml"],
    )
    assert render.stage_report("unit", report) == [
        "unit (test): 5 tests: 2 passed, 1 failed, 1 skipped, 1 flaky; gate failed: 1 test failed",
        "  failed  tests.test_app.test_sum: AssertionError: assert 3 == 4",
        "  flaky  tests.test_app.test_net: ConnectionError",
    ]


def test_many_failing_tests_are_cut() -> None:
    report = runs_pb2.StageReport(
        kind="test",
        counts={"total": 30, "failed": 30},
        tests=[runs_pb2.TestCaseResult(name=f"t{n}", outcome="failed") for n in range(30)],
        gate_passed=False,
        gate_reason="30 tests failed",
    )
    lines = render.stage_report("t", report)
    assert lines[0] == "t (test): 30 tests: 30 failed; gate failed: 30 tests failed"
    assert lines[1] == "  failed  t0"
    assert lines[20] == "  failed  t19"
    assert lines[21:] == ["  ... and 10 more; conveyor show RUN --findings all"]


def test_passing_report_without_items() -> None:
    report = runs_pb2.StageReport(
        kind="lint", counts={"total": 0}, gate_passed=True, gate_reason="no findings"
    )
    assert render.stage_report("lint", report) == [
        "lint (lint): 0 findings; gate passed: no findings"
    ]


def test_control_characters_in_reports_do_not_reach_the_terminal() -> None:
    report = runs_pb2.StageReport(
        kind="lint",
        counts={"total": 1, "error": 1},
        findings=[finding(message="evil \x1b]0;title\x07 text", file="a\x1b[2Jb.py")],
        gate_passed=False,
        gate_reason="reason \x1b[31m",
    )
    lines = render.stage_report("lint", report)
    assert lines[0].endswith("gate failed: reason \\x1b[31m")
    assert lines[1] == "  a\\x1b[2Jb.py:1:8  error  ruff/F401  evil \\x1b]0;title\\x07 text"


def test_json_output_includes_the_whole_report() -> None:
    run = make_run(lint_stage())
    data = json.loads(render.to_json(run))
    report = data["stages"][0]["report"]
    assert report["kind"] == "lint"
    assert report["counts"] == {"total": 3, "error": 2, "warning": 1, "baselined": 1}
    assert report["gate_passed"] is False
    assert report["sources"] == ["ruff.json"]
    assert [f["rule"] for f in report["findings"]] == ["E501", "F401", "F821"]
    assert report["findings"][0]["baselined"] is True
    assert report["findings"][2]["line"] == 12


def test_a_plugin_report_shows_its_own_counts() -> None:
    from conveyor.client.render import report_counts

    report = runs_pb2.StageReport(kind="changelog", counts={"changes": 3}, gate_passed=True)
    assert report_counts(report) == "changes 3"


# -- what fails the gate comes first (issue 8.3) --------------------------------


def noisy_scan() -> runs_pb2.StageReport:
    """A scan as on a real repository: 67 low findings first in report order
    (bandit's asserts in tests), then the 4 high ones that fail the gate,
    one medium, and 2 high findings a baseline accepted."""
    lows = [
        finding(file=f"tests/test_{n:02}.py", line=3, severity="low", tool="bandit", rule="B101")
        for n in range(67)
    ]
    highs = [
        finding(file=file, line=line, severity="high", tool="detect-secrets", rule="Secret Keyword")
        for file, line in [
            ("src/app/settings.py", 9),
            ("tests/fixtures/keys.py", 4),
            (".pre-commit-config.yaml", 12),
            ("src/app/auth.py", 40),
        ]
    ]
    accepted = [
        finding(file="legacy.py", line=n, severity="high", rule="B324", baselined=True)
        for n in (1, 2)
    ]
    medium = finding(file="src/app/io.py", line=7, severity="medium", tool="bandit", rule="B108")
    return runs_pb2.StageReport(
        kind="scan",
        counts={"total": 74, "low": 67, "medium": 1, "high": 4, "baselined": 2},
        findings=[*accepted, *lows, medium, *highs],
        gate_passed=False,
        gate_reason="4 findings at or above high (Secret Keyword x4); 2 baselined",
    )


def listed(lines: list[str]) -> list[tuple[str, str]]:
    """(where, severity) of each finding line of a stage report."""
    return [
        (line.split()[0], line.split()[1])
        for line in lines[1:]
        if not line.startswith(("  ...", "  ("))
    ]


def test_the_findings_that_fail_the_gate_come_first_and_the_rest_is_counted() -> None:
    run = make_run(runs_pb2.Stage(name="scan", report=noisy_scan()))
    lines = render.run_detail(run)
    report = lines[lines.index(next(line for line in lines if line.startswith("scan (scan)"))) :]
    assert listed(report)[:5] == [
        (".pre-commit-config.yaml:12:8", "high"),
        ("src/app/auth.py:40:8", "high"),
        ("src/app/settings.py:9:8", "high"),
        ("tests/fixtures/keys.py:4:8", "high"),
        ("src/app/io.py:7:8", "medium"),
    ]
    assert [severity for _, severity in listed(report)[5:]] == ["low"] * 15
    assert report[-1] == "  ... and 54 more; conveyor show r-1 --findings all"
    assert len(report) == 1 + 20 + 1


def test_findings_all_lists_every_finding_baselined_ones_last() -> None:
    lines = render.stage_report("scan", noisy_scan(), limit=render.ALL, run_id="r-1")
    rows = listed(lines)
    assert len(rows) == 74
    assert rows[-2:] == [("legacy.py:1:8", "high"), ("legacy.py:2:8", "high")]
    assert lines[-1].endswith("(baselined) `os` imported but unused")
    assert not any("more" in line for line in lines[1:])


def test_a_severity_filter_keeps_that_severity_and_worse_and_counts_the_rest() -> None:
    lines = render.stage_report("scan", noisy_scan(), min_severity="high", run_id="r-1")
    assert [severity for _, severity in listed(lines)] == ["high"] * 6
    assert lines[-1] == "  (68 below high not shown)"

    lines = render.stage_report("scan", noisy_scan(), limit=3, min_severity="medium", run_id="r-1")
    assert [severity for _, severity in listed(lines)] == ["high"] * 3
    assert lines[-2:] == [
        "  ... and 4 more; conveyor show r-1 --findings all --severity medium",
        "  (67 below medium not shown)",
    ]


def test_lint_levels_are_ordered_and_filtered_on_the_same_scale() -> None:
    report = runs_pb2.StageReport(
        kind="lint",
        counts={"total": 4, "note": 1, "warning": 1, "error": 1, "custom": 1},
        findings=[
            finding(line=1, severity="note"),
            finding(line=2, severity="custom"),
            finding(line=3, severity="warning"),
            finding(line=4, severity="error"),
        ],
        gate_passed=False,
        gate_reason="1 finding at levels error",
    )
    assert [s for _, s in listed(render.stage_report("lint", report))] == [
        "error",
        "warning",
        "note",
        "custom",  # unknown severities last, but never filtered out
    ]
    assert render.report_counts(report) == "4 findings (error 1, warning 1, note 1, custom 1)"
    for threshold in ("warning", "medium"):
        lines = render.stage_report("lint", report, min_severity=threshold)
        assert [s for _, s in listed(lines)] == ["error", "warning", "custom"]
        assert lines[-1] == f"  (1 below {threshold} not shown)"


def test_failed_and_errored_tests_come_before_flaky_ones_and_all_adds_skipped() -> None:
    outcomes = ["skipped", "flaky", "failed", "skipped", "error", "flaky", "failed"]
    report = runs_pb2.StageReport(
        kind="test",
        counts={"total": 10, "passed": 3, "failed": 2, "errors": 1, "skipped": 2, "flaky": 2},
        tests=[
            runs_pb2.TestCaseResult(name=f"t{n}", outcome=outcome)
            for n, outcome in enumerate(outcomes)
        ],
        gate_passed=False,
        gate_reason="2 failed, 1 error of 10 tests (t2, t4, t6)",
    )
    assert render.stage_report("unit", report)[1:] == [
        "  failed  t2",
        "  error  t4",
        "  failed  t6",
        "  flaky  t1",
        "  flaky  t5",
    ]
    assert render.stage_report("unit", report, limit=2, run_id="r-9")[1:] == [
        "  failed  t2",
        "  error  t4",
        "  ... and 3 more; conveyor show r-9 --findings all",
    ]
    every = render.stage_report("unit", report, limit=render.ALL)[1:]
    assert every[-2:] == ["  skipped  t0", "  skipped  t3"]
    assert len(every) == 7
