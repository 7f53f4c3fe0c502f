"""Running a reporting stage's commands and built-in tools through the
stage's executor."""

from __future__ import annotations

import os
import shutil
import sysconfig
from collections.abc import Iterable
from pathlib import Path

import trio

from conveyor.plugin import StageContext
from conveyor.plugins.reporting.files import (
    REPORTS_ENV,
    SARIF_PATTERNS,
    find_reports,
    reports_env,
    wrote_report,
)
from conveyor.plugins.reporting.frame import StageFailure
from conveyor.plugins.run import shell_script


def describe_exit(code: int) -> str:
    """``exited with 2`` or ``was killed by signal 9``."""
    return f"was killed by signal {-code}" if code < 0 else f"exited with {code}"


#: The scripts folder of the Python environment Conveyor runs in, where the
#: built-in tools are found when the stage's PATH has none: the daemon keeps
#: its own virtual environment off the stages' PATH (``stage_inherit_venv``).
DAEMON_SCRIPTS = sysconfig.get_path("scripts")


async def require_tools(ctx: StageContext, kind: str, tools: Iterable[str]) -> dict[str, str]:
    """Find each tool on the stage's PATH, else in :data:`DAEMON_SCRIPTS`
    (in a worker thread); fail the stage if one is in neither.

    Returns the tools' absolute paths, so what runs is what was checked.
    """
    search = ctx.env.get("PATH", os.defpath)
    scripts = DAEMON_SCRIPTS
    wanted = list(tools)

    def find() -> dict[str, str | None]:
        return {
            tool: shutil.which(tool, path=search) or shutil.which(tool, path=scripts)
            for tool in wanted
        }

    found: dict[str, str] = {}
    for tool, path in (await trio.to_thread.run_sync(find)).items():
        if path is None:
            raise StageFailure(
                f"{kind} tool {tool!r} is not installed (not on the stage's PATH,"
                f" nor in Conveyor's environment, {scripts})",
                error_type="tool_missing",
                system_error=True,
            )
        found[tool] = path
    return found


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
