"""The ``changelog`` stage kind.

Registered through the ``conveyor`` entry-point group (see pyproject.toml),
exactly like Conveyor's built-in plugins, and written against the public
:mod:`conveyor.plugin` module only.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio
from pydantic import Field, ValidationError

from conveyor.plugin import (
    Parameters,
    StageContext,
    StageKind,
    StageOutcome,
    StageReport,
    StageSpec,
    StageStatus,
    hookimpl,
    parameter_problems,
)


class ChangelogParameters(Parameters):
    """``with:`` of a ``changelog`` stage."""

    #: The tag (or any revision) to list changes since; default: the latest
    #: tag before the commit.
    since: str = ""
    max_entries: int = Field(200, ge=1, le=10_000)


class ChangelogStage:
    name = "changelog"
    description = "Write release notes (commit subjects since the previous tag)"

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        try:
            ChangelogParameters.model_validate(spec.with_)
        except ValidationError as exc:
            yield from parameter_problems(exc, ChangelogParameters, self.name)

    async def run(self, ctx: StageContext) -> StageOutcome:
        params = ChangelogParameters.model_validate(ctx.spec.with_)  # valid: checked at load
        since = params.since
        git = ["git", "-C", str(ctx.workspace)]
        if not since:
            described = await trio.run_process(
                [*git, "describe", "--tags", "--abbrev=0", "HEAD^"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            since = described.stdout.decode().strip() if described.returncode == 0 else ""
        revisions = f"{since}..HEAD" if since else "HEAD"
        log_command = [*git, "log", "--no-merges", f"--max-count={params.max_entries}"]
        listed = await trio.run_process(
            [*log_command, "--format=%h %s", revisions],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        if listed.returncode != 0:
            reason = f"git log {revisions} failed: {listed.stderr.decode().strip()}"
            return StageOutcome(StageStatus.FAILED, reason, error_type="git_error")
        entries = [line for line in listed.stdout.decode().splitlines() if line]
        title = f"Changes since {since}" if since else "All changes"
        notes = "\n".join([f"# {title}", "", *(f"- {entry}" for entry in entries), ""])
        await trio.Path(ctx.reports_dir).mkdir(parents=True, exist_ok=True)
        await trio.Path(ctx.reports_dir / "CHANGELOG.md").write_text(notes)
        await ctx.log.write(notes.encode())
        await ctx.log_line(f"{len(entries)} change(s) {('since ' + since) if since else ''}")
        return StageOutcome(
            StageStatus.SUCCEEDED,
            f"{len(entries)} change(s)",
            report=StageReport(kind="changelog", counts={"changes": len(entries)}),
            span_attributes={"conveyor.changelog.entries": len(entries)},
        )


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [ChangelogStage()]
