"""The ``test`` stage kind: run tests, read their JUnit XML, gate on failures.

```yaml
stages:
  test:
    uses: test
    run: python -m pytest --junitxml="$CONVEYOR_REPORTS_DIR/junit.xml"
    with:
      rerun_failed: 1     # 0..3 (default 0): re-run the commands when tests fail
      allow_flaky: true   # default; false: a flaky test fails the stage
```

The ``run:`` commands (required) run in one shell, as in the ``run`` kind,
and must write JUnit XML into ``$CONVEYOR_REPORTS_DIR``; every ``*.xml``
file there (recursively) is read as JUnit, so write other XML (coverage)
elsewhere. A command that writes none fails the stage, and so does one that
exits nonzero although its reports show no failure.

With ``rerun_failed: N``, when tests failed the same commands run again, up
to N times, each with a fresh ``$CONVEYOR_REPORTS_DIR`` (``rerun-1``, ...).
A test that failed first and passed in a re-run is *flaky*: counted and
listed as such, never silently passed. The others stay failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import trio
from pydantic import Field

from conveyor.plugin import (
    Parameters,
    StageContext,
    StageKind,
    StageOutcome,
    StageReport,
    StageSpec,
    hookimpl,
)
from conveyor.plugins.parameters import Shell
from conveyor.plugins.reporting.files import (
    REPORTS_ENV,
    find_reports,
    parse_report,
    prepare_reports_dir,
    relative_sources,
)
from conveyor.plugins.reporting.frame import ReportingStage, StageFailure
from conveyor.plugins.reporting.log import log_tests
from conveyor.plugins.reporting.outcome import finish
from conveyor.plugins.reporting.processes import describe_exit, run_commands
from conveyor.plugins.reports import JUnitResult, flaky_tests, parse_junit, test_gate

MAX_RERUNS = 3
JUNIT_PATTERNS = ("*.xml",)
#: Order of the tests in the report: what needs attention first.
OUTCOME_ORDER = {"failed": 0, "error": 1, "flaky": 2, "skipped": 3}


class TestParameters(Parameters):
    """``with:`` of a ``test`` stage."""

    __test__ = False  # not a pytest test class

    rerun_failed: int = Field(0, ge=0, le=MAX_RERUNS)
    allow_flaky: bool = True
    shell: Shell = "sh"


PARAMETERS = tuple(TestParameters.model_fields)


class TestStage(ReportingStage[TestParameters]):
    __test__ = False  # not a pytest test class

    name = "test"
    description = "Run tests that write JUnit XML; report results, re-run failures, flag flaky"
    parameters = TestParameters

    def check(self, spec: StageSpec, params: TestParameters | None) -> Iterable[tuple[str, str]]:
        if not spec.run:
            yield (
                "run",
                "a 'test' stage needs a command in 'run' that writes JUnit XML"
                f" into ${REPORTS_ENV}",
            )

    async def execute(self, ctx: StageContext, params: TestParameters) -> StageOutcome:
        folder = await prepare_reports_dir(ctx)

        exit_code, first, files = await self._run_tests(ctx, params, folder, "the test command")
        sources = list(files)
        if exit_code and not first.failed and not first.errors:
            reason = (
                f"the test command {describe_exit(exit_code)} although its JUnit XML"
                f" shows no failed test ({first.total} test{'' if first.total == 1 else 's'})"
            )
            report = build_report(first, [], sources, folder, (False, reason))
            raise StageFailure(reason, error_type="exit_code", exit_code=exit_code, report=report)

        failing = {c.name: c.outcome for c in first.cases if c.outcome in ("failed", "error")}
        flaky: list[str] = []
        for number in range(1, params.rerun_failed + 1):
            remaining = {name: outcome for name, outcome in failing.items() if name not in flaky}
            if not remaining:
                break
            names = list(remaining)
            await ctx.log_line(
                f"re-running {rerun_summary(remaining.values())}"
                f" ({number}/{params.rerun_failed}): {', '.join(names[:5])}"
                + (", ..." if len(names) > 5 else "")
            )
            rerun_dir = folder / f"rerun-{number}"
            await _mkdir(rerun_dir)
            try:
                exit_code, rerun, files = await self._run_tests(
                    ctx, params, rerun_dir, f"re-run {number} of the test command"
                )
            except StageFailure as failure:
                # keep what the first run found
                gate = (False, failure.reason)
                failure.report = build_report(first, flaky, sources, folder, gate)
                raise
            sources += files
            newly = [name for name in flaky_tests(first, rerun) if name not in flaky]
            flaky += newly
            if newly:
                await ctx.log_line(f"passed on re-run {number} (flaky): {', '.join(newly)}")

        gate = test_gate(first, flaky, allow_flaky=params.allow_flaky)
        result = build_report(first, flaky, sources, folder, gate)
        counts = result.counts
        await ctx.log_line(
            f"tests: {counts['total']} total, {counts['passed']} passed,"
            f" {counts['failed']} failed, {counts['errors']} errors,"
            f" {counts['skipped']} skipped, {counts['flaky']} flaky;"
            f" gate {'passed' if result.gate_passed else 'failed'}: {result.gate_reason}"
        )
        await log_tests(ctx, result.tests)
        return finish(result, exit_code=exit_code)

    async def _run_tests(
        self, ctx: StageContext, params: TestParameters, folder: Path, what: str
    ) -> tuple[int, JUnitResult, list[Path]]:
        """Run the commands with reports going to ``folder`` and read every
        JUnit file they wrote there (re-run folders do not exist yet when the
        first run's files are collected)."""
        code = await run_commands(ctx, params.shell, folder)
        assert code is not None  # validated: there are commands
        files = await find_reports(folder, JUNIT_PATTERNS)
        if not files:
            suffix = f" ({describe_exit(code)})" if code else ""
            raise StageFailure(
                f"{what} wrote no JUnit XML to ${REPORTS_ENV}{suffix}",
                error_type="report_error",
                exit_code=code,
            )
        result = JUnitResult()
        for path in files:
            result = result.merge(await parse_report(ctx, parse_junit, path))
        return code, result, files


def build_report(
    first: JUnitResult,
    flaky: list[str],
    sources: list[Path],
    folder: Path,
    gate: tuple[bool, str],
) -> StageReport:
    """The report of the first run, its flaky tests marked as such; the tests
    that need attention listed first."""
    tests = sorted(
        (
            replace(case, outcome="flaky")
            if case.name in flaky and case.outcome in ("failed", "error")
            else case
            for case in first.cases
        ),
        key=lambda case: OUTCOME_ORDER.get(case.outcome, len(OUTCOME_ORDER)),
    )
    return StageReport(
        kind="test",
        counts=count_tests(first, flaky),
        tests=tests,
        gate_passed=gate[0],
        gate_reason=gate[1],
        sources=relative_sources(sources, folder),
    )


def rerun_summary(outcomes: Iterable[str]) -> str:
    """``3 failed and 2 errored tests`` for the first run's outcomes of the
    tests being re-run (``failed`` or ``error``)."""
    values = list(outcomes)
    failed = values.count("failed")
    errored = len(values) - failed
    parts = [f"{failed} failed" if failed else "", f"{errored} errored" if errored else ""]
    noun = "test" if len(values) == 1 else "tests"
    return " and ".join(part for part in parts if part) + f" {noun}"


async def _mkdir(path: Path) -> None:
    await trio.to_thread.run_sync(lambda: path.mkdir(parents=True, exist_ok=True))


def count_tests(first: JUnitResult, flaky: Iterable[str]) -> dict[str, int]:
    """Counts of the first run, with its flaky tests moved out of failed and
    errors into flaky."""
    flaky_names = set(flaky)
    was_failed = sum(1 for c in first.cases if c.name in flaky_names and c.outcome == "failed")
    was_error = sum(1 for c in first.cases if c.name in flaky_names and c.outcome == "error")
    return {
        "total": first.total,
        "passed": first.passed,
        "failed": first.failed - was_failed,
        "errors": first.errors - was_error,
        "skipped": first.skipped,
        "flaky": was_failed + was_error,
    }


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [TestStage()]
