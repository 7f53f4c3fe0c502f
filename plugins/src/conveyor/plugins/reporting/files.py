"""The attempt's reports folder: making it, finding the reports tools wrote
there and parsing them in worker threads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import trio

from conveyor.plugin import StageContext
from conveyor.plugins.reporting.frame import StageFailure
from conveyor.plugins.reports import ReportError

#: The environment variable naming the attempt's reports folder.
REPORTS_ENV = "CONVEYOR_REPORTS_DIR"
#: SARIF files that ``run:`` commands leave in the reports folder.
SARIF_PATTERNS = ("*.sarif", "*.sarif.json")

P = ParamSpec("P")
T = TypeVar("T")


def no_findings_report(kind: str, exit_code: int | None) -> StageFailure:
    """The failure of a findings stage that has nothing to parse."""
    return StageFailure(
        f"no {kind} report: no built-in tool ran and the run commands wrote no SARIF"
        f" file ({', '.join(SARIF_PATTERNS)}) to ${REPORTS_ENV}",
        error_type="report_error",
        exit_code=exit_code,
    )


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
    """The environment that names ``folder`` as ``$CONVEYOR_REPORTS_DIR``."""
    return {REPORTS_ENV: str(folder)}


def wrote_report(path: Path) -> bool:
    """True when ``path`` is a non-empty file. Blocking."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


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
    file = Path(exc.path)
    if ctx.reports_dir != Path() and file.is_relative_to(ctx.reports_dir):
        return f"${REPORTS_ENV}/{file.relative_to(ctx.reports_dir).as_posix()}: {exc.problem}"
    if file.is_relative_to(ctx.workspace):
        return f"{file.relative_to(ctx.workspace).as_posix()}: {exc.problem}"
    return str(exc)
