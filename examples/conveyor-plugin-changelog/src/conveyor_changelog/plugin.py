"""The ``changelog`` stage kind.

Registered through the ``conveyor`` entry-point group (see pyproject.toml),
exactly like Conveyor's built-in plugins.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

from conveyor.daemon.hookspecs import hookimpl
from conveyor.daemon.pipeline import StageSpec
from conveyor.daemon.records import StageStatus
from conveyor.daemon.reports import StageReport
from conveyor.daemon.stages import StageContext, StageKind, StageOutcome

PARAMETERS = ("since", "max_entries")


class ChangelogStage:
    name = "changelog"
    description = "Write release notes (commit subjects since the previous tag)"

    def validate(self, spec: StageSpec) -> Iterable[tuple[str, str]]:
        for key in spec.with_:
            if key not in PARAMETERS:
                yield (
                    f"with.{key}",
                    f"unknown parameter {key!r}; expected one of: since, max_entries",
                )
        limit = spec.with_.get("max_entries", 200)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            yield "with.max_entries", "max_entries must be a positive integer"

    async def run(self, ctx: StageContext) -> StageOutcome:
        since = str(ctx.spec.with_.get("since") or "")
        limit = int(ctx.spec.with_.get("max_entries", 200))
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
        listed = await trio.run_process(
            [*git, "log", "--no-merges", f"--max-count={limit}", "--format=%h %s", revisions],
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
