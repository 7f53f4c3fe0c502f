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
``ruff`` runs as ``ruff check --no-cache --output-format json --output-file
$CONVEYOR_REPORTS_DIR/ruff.json --exit-zero <paths>``, with the repository's
own ruff configuration.

Any other linter runs from ``run:`` and writes SARIF (``*.sarif`` or
``*.sarif.json``) into ``$CONVEYOR_REPORTS_DIR``; every such file is
parsed::

    run:
      - hadolint -f sarif Dockerfile > "$CONVEYOR_REPORTS_DIR/hadolint.sarif" || true

The ``run:`` commands run first, in one shell that stops at the first
failing command (``with: {shell: bash}`` as in the ``run`` kind). If they
exit nonzero without leaving a SARIF file, the stage fails.

The stage fails when a finding has a level listed in ``fail_on``; the
report (``conveyor show``) lists the findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conveyor.daemon.hookspecs import hookimpl
from conveyor.daemon.pipeline import StageSpec
from conveyor.daemon.reports import Finding
from conveyor.daemon.stages import StageContext, StageKind, StageOutcome
from conveyor.plugins.reporting import (
    REPORTS_ENV,
    SARIF_PATTERNS,
    Params,
    ReportingStage,
    StageFailure,
    finish_findings,
    parse_report,
    prepare_reports_dir,
    relative_sources,
    require_tools,
    run_sarif_commands,
    run_tool,
)
from conveyor.plugins.reports import (
    LINT_LEVELS,
    lint_gate,
    parse_ruff_json,
    parse_sarif,
    with_fingerprints,
)

TOOLS = ("ruff",)
PARAMETERS = ("tools", "paths", "fail_on", "shell")
DEFAULT_FAIL_ON = ("error", "warning")


@dataclass(frozen=True)
class LintParams:
    tools: list[str]
    paths: list[str]
    fail_on: list[str]
    shell: str
    problems: list[tuple[str, str]]

    @classmethod
    def read(cls, spec: StageSpec) -> LintParams:
        params = Params(spec, "lint", PARAMETERS)
        default_tools = [] if spec.run else list(TOOLS)
        tools = params.str_list("tools", default_tools, TOOLS)
        if not spec.run and not tools:
            params.problem(
                "tools", "a lint stage without 'run' commands needs at least one tool in 'tools'"
            )
        return cls(
            tools=tools,
            paths=params.workspace_paths("paths", ["."]),
            fail_on=params.str_list("fail_on", DEFAULT_FAIL_ON, LINT_LEVELS),
            shell=params.shell(),
            problems=params.problems,
        )


class LintStage(ReportingStage[LintParams]):
    name = "lint"
    description = "Run linters (ruff built in; others via SARIF), report findings, gate on levels"

    def read_params(self, spec: StageSpec) -> LintParams:
        return LintParams.read(spec)

    async def execute(self, ctx: StageContext, params: LintParams) -> StageOutcome:
        tools = require_tools(ctx, "lint", params.tools)
        folder = await prepare_reports_dir(ctx)

        exit_code, sarif_files = await run_sarif_commands(ctx, params.shell, folder)

        findings: list[Finding] = []
        parsed: list[Path] = []
        if "ruff" in tools:
            report = folder / "ruff.json"
            argv = [
                tools["ruff"],
                "check",
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
            raise StageFailure(
                f"no lint report: no built-in tool ran and the run commands wrote no SARIF"
                f" file ({', '.join(SARIF_PATTERNS)}) to ${REPORTS_ENV}",
                error_type="report_error",
                exit_code=exit_code,
            )

        findings = with_fingerprints(findings, ctx.workspace)
        gate = lint_gate(findings, params.fail_on)
        sources = relative_sources(parsed, folder)
        return await finish_findings(ctx, "lint", findings, gate, sources, exit_code)


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [LintStage()]
