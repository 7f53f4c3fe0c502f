"""Counts and gate decisions, with their reasons."""

from __future__ import annotations

import dataclasses

import pytest

from conveyor.daemon import reports as records
from conveyor.daemon.reports import Finding
from conveyor.plugins.reports import (
    LINT_LEVELS,
    SCAN_SEVERITIES,
    Baseline,
    BaselineEntry,
    JUnitResult,
    apply_baseline,
    finding_counts,
    flaky_tests,
    lint_gate,
    parse_bandit_json,
    parse_detect_secrets_json,
    parse_junit,
    parse_ruff_json,
    parse_sarif,
    scan_gate,
    scan_rank,
    test_gate,
    with_fingerprints,
)
from tests.unit.reports.support import (
    DATA,
    GENERATED_ROOT,
    HANDWRITTEN,
    JUNIT,
    SCANNER_ROOT,
    WORKSPACE,
)

SUITE = "tests.unit.reports.data.junit.sample_suite"


def ruff_findings() -> list[Finding]:
    return parse_ruff_json(DATA / "ruff.json", root=GENERATED_ROOT)


def sarif_findings() -> list[Finding]:
    return parse_sarif(HANDWRITTEN / "scanner.sarif", root=SCANNER_ROOT)


def scan_findings() -> list[Finding]:
    """bandit and detect-secrets findings, B324 and the high-entropy string baselined."""
    findings = with_fingerprints(
        parse_bandit_json(DATA / "bandit.json", root=WORKSPACE)
        + parse_detect_secrets_json(DATA / "detect-secrets.json", root=WORKSPACE),
        WORKSPACE,
    )
    baseline = Baseline(
        (
            BaselineEntry(tool="bandit", rule="B324", reason="checksums, not passwords"),
            BaselineEntry(tool="detect-secrets", rule="Base64 High Entropy String"),
        )
    )
    return apply_baseline(findings, baseline)


def test_levels() -> None:
    assert LINT_LEVELS == ("note", "warning", "error")
    assert SCAN_SEVERITIES == ("low", "medium", "high", "critical")


def test_test_gate_is_not_collected_as_a_test() -> None:
    assert getattr(test_gate, "__test__", True) is False


# --- counts -------------------------------------------------------------------


def test_finding_counts() -> None:
    assert finding_counts(ruff_findings()) == {"total": 5, "baselined": 0, "error": 5}
    # severities count what is not baselined; total counts everything
    assert finding_counts(sarif_findings()) == {
        "total": 9,
        "baselined": 1,
        "note": 2,
        "warning": 2,
        "error": 4,
    }
    assert finding_counts(scan_findings()) == {
        "total": 8,
        "baselined": 3,
        "low": 2,
        "medium": 1,
        "high": 2,
    }
    assert finding_counts([]) == {"total": 0, "baselined": 0}


# --- lint gate ----------------------------------------------------------------


def test_lint_gate_fails_on_listed_levels() -> None:
    assert lint_gate(ruff_findings(), {"error"}) == (
        False,
        "5 findings at levels error (syntax-error x2, F401 x2, E501);"
        " first: report.ipynb:1 syntax-error",
    )
    assert lint_gate(ruff_findings()[2:], ["error", "warning"]) == (
        False,
        "3 findings at levels error, warning (F401 x2, E501); first: src/shop/cart.py:3 F401",
    )


def test_lint_gate_mentions_baselined_findings() -> None:
    passed, reason = lint_gate(sarif_findings(), {"error"})
    assert not passed
    assert reason == (
        "4 findings at levels error (py/code-injection, py/clear-text-logging-sensitive-data, "
        "python.lang.security.audit.eval-detected.eval-detected, "
        "generic.secrets.security.detected-aws-access-key-id-value);"
        " first: deploy/credentials.ini:3"
        " generic.secrets.security.detected-aws-access-key-id-value; 1 baselined"
    )


def test_lint_gate_passes() -> None:
    notes = sarif_findings()[3:5]  # one note, one baselined note
    assert lint_gate(notes, {"error", "warning"}) == (
        True,
        "no findings at levels error, warning; 1 at note; 1 baselined",
    )
    assert lint_gate([], {"error"}) == (True, "no findings at levels error")
    baselined = [dataclasses.replace(f, baselined=True) for f in ruff_findings()]
    assert lint_gate(baselined, {"error"}) == (True, "no findings at levels error; 5 baselined")


def test_lint_gate_arguments() -> None:
    assert lint_gate(ruff_findings(), "error")[0] is False  # a lone level, as a string
    assert lint_gate(ruff_findings(), ()) == (
        True,
        "not gated (fail_on lists no levels): 5 findings",
    )
    with pytest.raises(ValueError, match="unknown lint level 'fatal' in fail_on"):
        lint_gate(ruff_findings(), {"error", "fatal"})


def test_lint_gate_lists_at_most_eight_rules() -> None:
    findings = [
        Finding(tool="ruff", rule=f"E{n:03}", severity="error", file="a.py") for n in range(11)
    ]
    _, reason = lint_gate(findings, {"error"})
    assert reason == (
        "11 findings at levels error "
        "(E000, E001, E002, E003, E004, E005, E006, E007, and 3 more rules); first: a.py E000"
    )


# --- scan gate ----------------------------------------------------------------


def test_scan_gate() -> None:
    findings = scan_findings()
    assert scan_gate(findings, "high") == (
        False,
        "2 findings at or above high (AWS Access Key, Secret Keyword);"
        " first: deploy/credentials.ini:3 AWS Access Key; 3 baselined",
    )
    assert scan_gate(findings, "low") == (
        False,
        "5 findings at or above low (B105, B307, B101, AWS Access Key, Secret Keyword);"
        " first: deploy/credentials.ini:3 AWS Access Key; 3 baselined",
    )
    assert scan_gate(findings, "critical") == (
        True,
        "no findings at or above critical; 5 below critical; 3 baselined",
    )
    bandit = parse_bandit_json(DATA / "bandit.json", root=WORKSPACE)
    assert scan_gate(bandit, "high") == (
        False,
        "2 findings at or above high (B324 x2); first: src/shop/admin.py:13 B324",
    )
    assert scan_gate(bandit[:2], "high") == (True, "no findings at or above high; 2 below high")
    assert scan_gate([], "medium") == (True, "no findings at or above medium")


def test_scan_gate_with_sarif_security_severities() -> None:
    findings = parse_sarif(HANDWRITTEN / "scanner.sarif", root=SCANNER_ROOT, security=True)
    assert scan_gate(findings, "critical") == (
        False,
        "1 finding at or above critical (py/code-injection);"
        " first: src/shop/admin.py:9 py/code-injection; 1 baselined",
    )
    passed, reason = scan_gate(findings, "high")
    assert not passed
    assert reason.startswith("4 findings at or above high (py/code-injection, ")


def test_scan_ranks() -> None:
    assert [scan_rank(s) for s in SCAN_SEVERITIES] == [0, 1, 2, 3]
    assert [scan_rank(s) for s in ("note", "warning", "error", "INFO", "moderate")] == [
        0,
        1,
        2,
        0,
        1,
    ]
    assert scan_rank("unheard-of") == 3  # fails closed
    with pytest.raises(ValueError, match="unknown severity 'severe' for fail_on"):
        scan_gate([], "severe")


# --- test gate ----------------------------------------------------------------


def first_run() -> JUnitResult:
    return parse_junit(JUNIT / "pytest-junit.xml")


def test_test_gate_fails_on_failures_and_errors() -> None:
    assert test_gate(first_run(), [], allow_flaky=True) == (
        False,
        f"2 failed, 1 error of 8 tests ({SUITE}.test_totals, {SUITE}.test_uses_database, "
        f"{SUITE}.test_flaky)",
    )


def test_test_gate_leaves_flaky_tests_out_of_the_failures() -> None:
    first = first_run()
    flaky = flaky_tests(first, parse_junit(JUNIT / "pytest-junit-rerun.xml"))
    assert test_gate(first, flaky, allow_flaky=True) == (
        False,
        f"1 failed, 1 error of 8 tests ({SUITE}.test_totals, {SUITE}.test_uses_database); "
        f"1 flaky: {SUITE}.test_flaky",
    )


def only_flaky() -> JUnitResult:
    """The first run, had only the flaky test failed."""
    first = first_run()
    flaky = [c for c in first.cases if c.outcome != "error" and not c.name.endswith("totals")]
    return dataclasses.replace(first, failed=1, errors=0, cases=flaky)


def test_test_gate_on_flaky_tests() -> None:
    flaky = [f"{SUITE}.test_flaky"]
    assert test_gate(only_flaky(), flaky, allow_flaky=False) == (
        False,
        f"1 flaky test of 8 tests failed, then passed on rerun ({SUITE}.test_flaky); "
        "flaky tests are not allowed",
    )
    assert test_gate(only_flaky(), flaky, allow_flaky=True) == (
        True,
        f"6 of 8 tests passed, 2 skipped (1 flaky: {SUITE}.test_flaky)",
    )


def test_test_gate_passes() -> None:
    result = JUnitResult(total=10, passed=10, passed_names={f"t{n}" for n in range(10)})
    assert test_gate(result, [], allow_flaky=False) == (True, "all 10 tests passed")
    flaky = JUnitResult(total=10, passed=9, failed=1, cases=[
        records.TestCaseResult(name="tests.test_x.test_y", outcome="failed")
    ])  # fmt: skip
    assert test_gate(flaky, ["tests.test_x.test_y"], allow_flaky=True) == (
        True,
        "all 10 tests passed (1 flaky: tests.test_x.test_y)",
    )
    assert test_gate(JUnitResult(total=1, passed=1), [], allow_flaky=False) == (
        True,
        "the only test passed",
    )
    assert test_gate(JUnitResult(), [], allow_flaky=False) == (
        False,
        "no tests ran (the reports hold no test cases)",
    )
    jest = parse_junit(HANDWRITTEN / "jest-junit.xml")
    assert test_gate(jest, [], allow_flaky=False) == (
        False,
        "1 failed of 5 tests (cart removes an item)",
    )


def test_test_gate_lists_at_most_five_tests() -> None:
    cases = [records.TestCaseResult(name=f"t{n}", outcome="error") for n in range(7)]
    result = JUnitResult(total=7, errors=7, cases=cases)
    assert test_gate(result, [], allow_flaky=False) == (
        False,
        "7 errors of 7 tests (t0, t1, t2, t3, t4 and 2 more)",
    )
