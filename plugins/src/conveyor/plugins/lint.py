"""The ``lint`` stage kind: run linters, collect their findings, gate on them.

```yaml
stages:
  lint:
    uses: lint
    with:
      tools: [ruff]            # default when there are no run commands, else []
      paths: [src, tests]      # default: ["."]
      fail_on: [error, warning]  # levels that fail the stage: note, warning, error
```

Built-in tools run with their machine output written to the reports folder:
``ruff`` runs as ``ruff check --no-fix --no-cache --output-format json
--output-file $CONVEYOR_REPORTS_DIR/ruff.json --exit-zero <paths>``, with the
repository's own ruff configuration, except that it never changes the
checkout: ``--no-fix`` overrides a ``fix = true`` there (which would
otherwise delete what it reports, in the workspace later stages build from)
and ``--no-cache`` keeps ``.ruff_cache`` out of the workspace.

Any other linter runs from ``run:`` and writes SARIF (``*.sarif`` or
``*.sarif.json``) into ``$CONVEYOR_REPORTS_DIR``; every such file is
parsed::

    run:
      - hadolint -f sarif Dockerfile > "$CONVEYOR_REPORTS_DIR/hadolint.sarif" || true

The ``run:`` commands run first, in one shell that stops at the first
failing command (``with: {shell: bash}`` as in the ``run`` kind). If they
exit nonzero without leaving a SARIF file, the stage fails.

The stage fails when a finding has a level listed in ``fail_on``; the
reason names the first of them. The log lists the first findings and the
report (``conveyor show``) all of them, those the gate fails on first.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from conveyor.plugin import (
    Finding,
    Parameters,
    StageContext,
    StageKind,
    StageOutcome,
    StageSpec,
    hookimpl,
)
from conveyor.plugins.parameters import Choices, Shell, WorkspacePaths
from conveyor.plugins.reporting.files import (
    no_findings_report,
    parse_report,
    prepare_reports_dir,
    relative_sources,
)
from conveyor.plugins.reporting.frame import ReportingStage
from conveyor.plugins.reporting.outcome import finish_findings, settle_findings
from conveyor.plugins.reporting.processes import require_tools, run_sarif_commands, run_tool
from conveyor.plugins.reports import (
    LintLevel,
    lint_gate,
    mark_lint_gate,
    parse_ruff_json,
    parse_sarif,
)

Tool = Literal["ruff"]


class LintParameters(Parameters):
    """``with:`` of a ``lint`` stage."""

    #: Default: ruff when the stage has no ``run:`` commands, else none.
    tools: Choices[Tool] | None = None
    paths: WorkspacePaths = ["."]
    fail_on: Choices[LintLevel] = ["error", "warning"]
    shell: Shell = "sh"

    def tools_for(self, spec: StageSpec) -> list[Tool]:
        if self.tools is not None:
            return self.tools
        return [] if spec.run else ["ruff"]


PARAMETERS = tuple(LintParameters.model_fields)


class LintStage(ReportingStage[LintParameters]):
    name = "lint"
    description = "Run linters (ruff built in; others via SARIF), report findings, gate on levels"
    parameters = LintParameters

    def check(self, spec: StageSpec, params: LintParameters | None) -> Iterable[tuple[str, str]]:
        if params is not None:
            yield from self.tools_problems(spec, params.tools_for(spec))

    async def execute(self, ctx: StageContext, params: LintParameters) -> StageOutcome:
        tools = await require_tools(ctx, "lint", params.tools_for(ctx.spec))
        folder = await prepare_reports_dir(ctx)

        exit_code, sarif_files = await run_sarif_commands(ctx, params.shell, folder)

        findings: list[Finding] = []
        parsed: list[Path] = []
        if "ruff" in tools:
            report = folder / "ruff.json"
            argv = [
                tools["ruff"],
                "check",
                "--no-fix",
                "--no-cache",
                "--output-format",
                "json",
                "--output-file",
                str(report),
                "--exit-zero",
                *params.paths,
            ]
            await run_tool(ctx, "ruff", argv, report, folder)
            findings += await parse_report(ctx, parse_ruff_json, report, root=ctx.workspace)
            parsed.append(report)
        for sarif in sarif_files:
            findings += await parse_report(ctx, parse_sarif, sarif, root=ctx.workspace)
            parsed.append(sarif)
        if not parsed:
            raise no_findings_report("lint", exit_code)

        findings = mark_lint_gate(await settle_findings(findings, ctx.workspace), params.fail_on)
        gate = lint_gate(findings, params.fail_on)
        sources = relative_sources(parsed, folder)
        return await finish_findings(ctx, "lint", findings, gate, sources, exit_code)


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [LintStage()]
