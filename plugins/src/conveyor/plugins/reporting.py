"""What the ``lint``, ``test`` and ``scan`` stage kinds share.

Each of them:

1. creates the attempt's reports folder (``ctx.reports_dir``, outside the
   workspace) and exports it to its processes as ``$CONVEYOR_REPORTS_DIR``;
2. runs the stage's ``run:`` commands, if any, in one shell like the ``run``
   kind (``-e``: the script stops at the first failing command);
3. runs built-in tools through the stage's executor, their machine output
   written to files in the reports folder, never to the log;
4. parses the reports, applies the gate and returns a
   :class:`~conveyor.daemon.reports.StageReport` with the outcome.

A tool's nonzero exit code is not by itself a failure when it wrote its
report (linters exit 1 when they find something): the gate decides. A tool
that exits nonzero *without* a report fails the stage.

A kind's ``run`` wraps its work in :func:`run_reporting_stage`; anywhere
inside, raising :class:`StageFailure` ends the attempt with a FAILED outcome
whose reason is written to the log.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

import trio

from conveyor.daemon.pipeline import StageSpec
from conveyor.daemon.records import StageStatus
from conveyor.daemon.reports import Finding, StageReport, TestCaseResult
from conveyor.daemon.stages import StageContext, StageOutcome
from conveyor.plugins.reports import ReportError, finding_counts
from conveyor.plugins.run import SHELLS, shell_script

__all__ = [
    "REPORTS_ENV",
    "SARIF_PATTERNS",
    "Params",
    "ReportingStage",
    "StageFailure",
    "describe_exit",
    "find_reports",
    "findings_summary",
    "finish",
    "finish_findings",
    "log_findings",
    "log_tests",
    "parse_report",
    "prepare_reports_dir",
    "relative_sources",
    "require_tools",
    "run_commands",
    "run_reporting_stage",
    "run_sarif_commands",
    "run_tool",
    "wrote_report",
]

#: The environment variable naming the attempt's reports folder.
REPORTS_ENV = "CONVEYOR_REPORTS_DIR"
#: SARIF files that ``run:`` commands leave in the reports folder.
SARIF_PATTERNS = ("*.sarif", "*.sarif.json")
#: Items (findings, tests) listed in the stage log after the summary.
LOG_ITEMS = 10

P = ParamSpec("P")
T = TypeVar("T")


class StageFailure(Exception):
    """Ends a report stage attempt with a FAILED outcome."""

    def __init__(
        self,
        reason: str,
        *,
        error_type: str,
        system_error: bool = False,
        exit_code: int | None = None,
        report: StageReport | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type
        self.system_error = system_error
        self.exit_code = exit_code
        self.report = report

    def outcome(self) -> StageOutcome:
        return StageOutcome(
            StageStatus.FAILED,
            self.reason,
            self.exit_code,
            error_type=self.error_type,
            system_error=self.system_error,
            span_attributes=span_attributes(self.report) if self.report is not None else {},
            report=self.report,
        )


async def run_reporting_stage(
    ctx: StageContext, work: Callable[[StageContext], Awaitable[StageOutcome]]
) -> StageOutcome:
    """Run ``work``, turning a :class:`StageFailure` into a FAILED outcome
    (its reason logged). Cancellation and other exceptions propagate."""
    try:
        return await work(ctx)
    except StageFailure as failure:
        await ctx.log_line(failure.reason)
        return failure.outcome()


class ReadsParams(Protocol):
    @property
    def problems(self) -> list[tuple[str, str]]: ...


ParamsT = TypeVar("ParamsT", bound=ReadsParams)


class ReportingStage(ABC, Generic[ParamsT]):
    """The frame of a reporting stage kind: its ``with:`` parameters are read
    (and checked) by ``read_params``; :meth:`execute` does the work, raising
    :class:`StageFailure` to fail the attempt with a reason."""

    name: str
    description: str

    @abstractmethod
    def read_params(self, spec: StageSpec) -> ParamsT:
        """Read and check the stage's ``with:`` parameters."""

    @abstractmethod
    async def execute(self, ctx: StageContext, params: ParamsT) -> StageOutcome:
        """Do the stage's work with checked parameters."""

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        return self.read_params(spec).problems

    async def run(self, ctx: StageContext) -> StageOutcome:
        return await run_reporting_stage(ctx, self._checked)

    async def _checked(self, ctx: StageContext) -> StageOutcome:
        params = self.read_params(ctx.spec)
        if params.problems:
            field, message = params.problems[0]
            raise StageFailure(f"{field}: {message}", error_type="invalid_parameters")
        return await self.execute(ctx, params)


# -- parameters (``with:``) --------------------------------------------------


class Params:
    """Reads a stage's ``with:`` mapping, collecting ``(field, message)``
    problems instead of raising, so that ``validate`` and ``run`` share the
    same reading. Each getter returns the default when the value is bad."""

    def __init__(self, spec: StageSpec, kind: str, allowed: Sequence[str]) -> None:
        self.values: Mapping[str, Any] = spec.with_
        self.kind = kind
        self.problems: list[tuple[str, str]] = []
        for key in self.values:
            if key not in allowed:
                self.problem(
                    key, f"unknown parameter {key!r}; the {kind} kind accepts: {', '.join(allowed)}"
                )

    def problem(self, key: str, message: str) -> None:
        self.problems.append((f"with.{key}", message))

    def shell(self) -> str:
        return self.choice("shell", "sh", SHELLS)

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self.values.get(key, default)
        if not isinstance(value, str) or value not in choices:
            self.problem(key, f"expected one of: {', '.join(choices)}; got {_describe(value)}")
            return default
        return value

    def str_list(
        self, key: str, default: Sequence[str], choices: Sequence[str] | None = None
    ) -> list[str]:
        """A list of strings (a single string counts as a list of one)."""
        value = self.values.get(key, list(default))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(key, f"expected a list of strings, got {_describe(value)}")
            return list(default)
        if choices is not None:
            unknown = [v for v in value if v not in choices]
            if unknown:
                self.problem(
                    key,
                    f"unknown value {unknown[0]!r}; expected any of: {', '.join(choices)}",
                )
                return list(default)
        if len(set(value)) != len(value):
            self.problem(key, "values must not repeat")
        return list(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.values.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(key, f"expected an integer from {low} to {high}, got {_describe(value)}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.values.get(key, default)
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {_describe(value)}")
            return default
        return value

    def workspace_paths(self, key: str, default: Sequence[str]) -> list[str]:
        """Relative paths inside the workspace, at least one."""
        paths = self.str_list(key, default)
        if not paths:
            self.problem(key, "expected at least one path")
            return list(default)
        for path in paths:
            problem = _workspace_path_problem(path)
            if problem:
                self.problem(key, f"{path!r}: {problem}")
                return list(default)
        return paths

    def workspace_file(self, key: str) -> str:
        """An optional relative path inside the workspace ("" when unset)."""
        value = self.values.get(key, "")
        if value in ("", None):
            return ""
        if not isinstance(value, str):
            self.problem(key, f"expected a path in the repository, got {_describe(value)}")
            return ""
        problem = _workspace_path_problem(value)
        if problem:
            self.problem(key, f"{value!r}: {problem}")
            return ""
        return value


def _describe(value: Any) -> str:
    from conveyor.daemon.pipeline.model import describe_value

    return describe_value(value)


def _workspace_path_problem(path: str) -> str:
    if not path:
        return "must not be empty"
    if path.startswith("-"):
        return "must not start with '-'"
    pure = PurePosixPath(path)
    if pure.is_absolute():
        return "must be relative to the repository root"
    if ".." in pure.parts:
        return "must stay inside the repository (no '..')"
    return ""


# -- processes ---------------------------------------------------------------


def describe_exit(code: int) -> str:
    """``exited with 2`` or ``was killed by signal 9``."""
    return f"was killed by signal {-code}" if code < 0 else f"exited with {code}"


def require_tools(ctx: StageContext, kind: str, tools: Iterable[str]) -> dict[str, str]:
    """Find each tool on the stage's PATH; fail the stage if one is missing.

    Returns the tools' absolute paths, so what runs is what was checked.
    """
    search = ctx.env.get("PATH", os.defpath)
    found: dict[str, str] = {}
    for tool in tools:
        path = shutil.which(tool, path=search)
        if path is None:
            raise StageFailure(
                f"{kind} tool {tool!r} is not installed (not found on PATH)",
                error_type="tool_missing",
                system_error=True,
            )
        found[tool] = path
    return found


async def prepare_reports_dir(ctx: StageContext) -> Path:
    """Create the attempt's (empty) reports folder and return its path."""
    folder = ctx.reports_dir
    if folder == Path():
        raise StageFailure(
            "the daemon gave this stage no reports folder",
            error_type="no_reports_dir",
            system_error=True,
        )
    await trio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
    return folder


def reports_env(folder: Path) -> dict[str, str]:
    return {REPORTS_ENV: str(folder)}


async def run_commands(ctx: StageContext, shell: str, folder: Path) -> int | None:
    """Run the stage's ``run:`` commands in one shell with ``$CONVEYOR_REPORTS_DIR``
    naming ``folder``; their exit code, or None when there are none."""
    if not ctx.spec.run:
        return None
    return await ctx.run_process(
        [shell, "-e", "-c", shell_script(ctx.spec.run)], env=reports_env(folder)
    )


async def run_sarif_commands(
    ctx: StageContext, shell: str, folder: Path
) -> tuple[int | None, list[Path]]:
    """Run the stage's ``run:`` commands and find the SARIF files they wrote.

    Commands that failed without writing any SARIF fail the stage: their
    failure would otherwise go unnoticed.
    """
    exit_code = await run_commands(ctx, shell, folder)
    sarif_files = await find_reports(folder, SARIF_PATTERNS)
    if exit_code and not sarif_files:
        raise StageFailure(
            f"the run commands {describe_exit(exit_code)} and wrote no SARIF report"
            f" to ${REPORTS_ENV}",
            error_type="exit_code",
            exit_code=exit_code,
        )
    return exit_code, sarif_files


def wrote_report(path: Path) -> bool:
    """True when ``path`` is a non-empty file."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


async def run_tool(
    ctx: StageContext, tool: str, argv: list[str], report: Path, folder: Path
) -> int:
    """Run a built-in tool that writes ``report``; fail the stage when it
    exits nonzero without writing it. Returns the exit code."""
    code = await ctx.run_process(argv, env=reports_env(folder))
    has_report = await trio.to_thread.run_sync(wrote_report, report)
    if not has_report:
        if code == 0:
            reason = f"{tool} wrote no report ({report.name})"
        else:
            reason = f"{tool} {describe_exit(code)} and wrote no report"
        raise StageFailure(reason, error_type="tool_error", exit_code=code)
    if code != 0:
        await ctx.log_line(f"{tool} {describe_exit(code)}; using the report it wrote")
    return code


async def find_reports(folder: Path, patterns: Sequence[str]) -> list[Path]:
    """Files under ``folder`` (recursively) matching any of ``patterns``, sorted."""

    def find() -> list[Path]:
        found = {path for pattern in patterns for path in folder.rglob(pattern) if path.is_file()}
        return sorted(found)

    return await trio.to_thread.run_sync(find)


def relative_sources(paths: Iterable[Path], folder: Path) -> list[str]:
    """Report files as named in ``StageReport.sources``: relative to the
    reports folder."""
    return [p.relative_to(folder).as_posix() if p.is_relative_to(folder) else p.name for p in paths]


async def parse_report(
    ctx: StageContext, parser: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Call a report parser in a worker thread; a :class:`ReportError`
    fails the stage with its text (the file named as the user knows it) as
    the reason."""
    try:
        return await trio.to_thread.run_sync(lambda: parser(*args, **kwargs))
    except ReportError as exc:
        raise StageFailure(report_error_text(exc, ctx), error_type="report_error") from exc


def report_error_text(exc: ReportError, ctx: StageContext) -> str:
    """The error with its file relative to ``$CONVEYOR_REPORTS_DIR`` or to
    the repository, rather than a long daemon-internal path."""
    path = getattr(exc, "path", None)
    problem = getattr(exc, "problem", None)
    if not isinstance(path, str) or not isinstance(problem, str):
        return str(exc)
    file = Path(path)
    if ctx.reports_dir != Path() and file.is_relative_to(ctx.reports_dir):
        return f"${REPORTS_ENV}/{file.relative_to(ctx.reports_dir).as_posix()}: {problem}"
    if file.is_relative_to(ctx.workspace):
        return f"{file.relative_to(ctx.workspace).as_posix()}: {problem}"
    return str(exc)


# -- results -----------------------------------------------------------------


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


def finish(
    report: StageReport, *, exit_code: int | None = None, error_type: str = "gate"
) -> StageOutcome:
    """The outcome of a stage whose gate decided."""
    status = StageStatus.SUCCEEDED if report.gate_passed else StageStatus.FAILED
    return StageOutcome(
        status,
        report.gate_reason,
        exit_code,
        error_type="" if report.gate_passed else error_type,
        span_attributes=span_attributes(report),
        report=report,
    )


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
    where = finding.file or "-"
    if finding.line:
        where += f":{finding.line}"
        if finding.column:
            where += f":{finding.column}"
    mark = " (baselined)" if finding.baselined else ""
    message = finding.message.splitlines()[0] if finding.message else ""
    return f"  {where}  {finding.severity}  {finding.tool}/{finding.rule}{mark}  {message}"


def test_case_line(test: TestCaseResult) -> str:
    message = test.message.splitlines()[0] if test.message else ""
    return f"  {test.outcome}  {test.name}" + (f": {message}" if message else "")


async def finish_findings(
    ctx: StageContext,
    kind: str,
    findings: list[Finding],
    gate: tuple[bool, str],
    sources: list[str],
    exit_code: int | None,
) -> StageOutcome:
    """The outcome of a findings stage (lint, scan): the report, a summary and
    the findings in the log."""
    passed, reason = gate
    report = StageReport(
        kind=kind,
        counts=finding_counts(findings),
        findings=findings,
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
