"""Summaries, findings and tests written into the stage log.

Findings are listed in gate order (:meth:`Finding.relevance`), the order the
daemon stores them in and ``conveyor show`` lists them: those the gate fails
on first, then the others by severity, worst first, then by file and line.
"""

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
    mark = " (baselined)" if finding.baselined else " (fails gate)" if finding.fails_gate else ""
    message = finding.message.splitlines()[0] if finding.message else ""
    return f"  {where}  {finding.severity}  {finding.tool}/{finding.rule}{mark}  {message}"


def test_case_line(test: TestCaseResult) -> str:
    """``  failed  tests.test_a.test_b: assert 1 == 2``."""
    message = test.message.splitlines()[0] if test.message else ""
    return f"  {test.outcome}  {test.name}" + (f": {message}" if message else "")


async def log_findings(ctx: StageContext, findings: Sequence[Finding]) -> None:
    """List the first :data:`LOG_ITEMS` findings that count (not baselined)
    in gate order, and how many more there are."""
    counted = sorted((f for f in findings if not f.baselined), key=Finding.relevance)
    for finding in counted[:LOG_ITEMS]:
        await ctx.log_line(finding_line(finding))
    hidden = len(counted) - LOG_ITEMS
    if hidden > 0:
        await ctx.log_line(
            f"  ... and {hidden} more not shown; conveyor show {ctx.run.id} --findings all"
        )


async def log_tests(ctx: StageContext, tests: Sequence[TestCaseResult]) -> None:
    """List the first failed, errored and flaky tests in the log."""
    shown = [t for t in tests if t.outcome != "skipped"]
    for test in shown[:LOG_ITEMS]:
        await ctx.log_line(test_case_line(test))
    if len(shown) > LOG_ITEMS:
        await ctx.log_line(
            f"  ... and {len(shown) - LOG_ITEMS} more not shown;"
            f" conveyor show {ctx.run.id} --findings all"
        )
