"""Summaries, findings and tests written into the stage log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from conveyor.plugin import Finding, StageContext, TestCaseResult

#: Items (findings, tests) listed in the stage log after the summary.
LOG_ITEMS = 10


def findings_summary(counts: Mapping[str, int]) -> str:
    """``3 findings (error 2, warning 1; 1 baselined)``."""
    total = counts.get("total", 0)
    detail = ", ".join(
        f"{key} {value}"
        for key, value in counts.items()
        if key not in ("total", "baselined") and value
    )
    if counts.get("baselined"):
        detail += ("; " if detail else "") + f"{counts['baselined']} baselined"
    noun = "finding" if total == 1 else "findings"
    return f"{total} {noun}" + (f" ({detail})" if detail else "")


def finding_line(finding: Finding) -> str:
    """``  src/a.py:3:1  error  ruff/F401  `os` imported but unused``."""
    where = finding.file or "-"
    if finding.line:
        where += f":{finding.line}"
        if finding.column:
            where += f":{finding.column}"
    mark = " (baselined)" if finding.baselined else ""
    message = finding.message.splitlines()[0] if finding.message else ""
    return f"  {where}  {finding.severity}  {finding.tool}/{finding.rule}{mark}  {message}"


def test_case_line(test: TestCaseResult) -> str:
    """``  failed  tests.test_a.test_b: assert 1 == 2``."""
    message = test.message.splitlines()[0] if test.message else ""
    return f"  {test.outcome}  {test.name}" + (f": {message}" if message else "")


async def log_findings(ctx: StageContext, findings: Sequence[Finding]) -> None:
    """List the first findings that count (not baselined) in the log."""
    shown = [f for f in findings if not f.baselined]
    for finding in shown[:LOG_ITEMS]:
        await ctx.log_line(finding_line(finding))
    if len(shown) > LOG_ITEMS:
        await ctx.log_line(f"  ... {len(shown) - LOG_ITEMS} more (conveyor show lists them)")


async def log_tests(ctx: StageContext, tests: Sequence[TestCaseResult]) -> None:
    """List the first failed, errored and flaky tests in the log."""
    shown = [t for t in tests if t.outcome != "skipped"]
    for test in shown[:LOG_ITEMS]:
        await ctx.log_line(test_case_line(test))
    if len(shown) > LOG_ITEMS:
        await ctx.log_line(f"  ... {len(shown) - LOG_ITEMS} more (conveyor show lists them)")
