"""The ``scan`` stage kind: security scanners, findings by severity, a gate.

```yaml
stages:
  scan:
    uses: scan
    with:
      tools: [bandit, detect-secrets]   # the default
      paths: ["."]                      # default
      fail_on: high                     # low, medium, high or critical
      baseline: .conveyor/scan-baseline.json   # optional, in the repository
```

Built-in tools, their output written to the reports folder (never to the
log):

* ``bandit -r <paths> -x <excluded> -f json -o $CONVEYOR_REPORTS_DIR/bandit.json -q --exit-zero``
* ``detect-secrets scan --all-files --exclude-files <excluded> <paths>``, its
  standard output redirected to ``$CONVEYOR_REPORTS_DIR/detect-secrets.json``
  (it contains hashed secrets).

Both skip ``.git``, ``.venv``, ``.tox``, ``.nox``, ``__pycache__`` and
``node_modules`` folders. Other scanners run from ``run:`` and write SARIF
(``*.sarif``, ``*.sarif.json``) into ``$CONVEYOR_REPORTS_DIR``.

Neither tool writes into the workspace (bandit reads no cache, detect-secrets
is not asked to update a baseline): analysis stages never change the
checkout later stages build from.

The stage fails when a finding not in the baseline has a severity at or
above ``fail_on``; the reason names the first of them, and the log lists
them before the others. Findings in the baseline file itself are ignored (its
fingerprints look like secrets to detect-secrets). Finding messages are
redacted: no secret reaches the log, the report or the API.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Literal

import trio

from conveyor.plugin import (
    Finding,
    Parameters,
    StageContext,
    StageKind,
    StageOutcome,
    StageSpec,
    hookimpl,
)
from conveyor.plugins.parameters import Choices, OptionalWorkspaceFile, Shell, WorkspacePaths
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
    Baseline,
    ScanSeverity,
    load_baseline,
    mark_scan_gate,
    parse_bandit_json,
    parse_detect_secrets_json,
    parse_sarif,
    scan_gate,
)

Tool = Literal["bandit", "detect-secrets"]
#: Folders neither scanner looks into: version control, virtual
#: environments, caches and third-party code.
EXCLUDED_DIRS = (".git", ".venv", ".tox", ".nox", "__pycache__", "node_modules")
BANDIT_EXCLUDE = ",".join(f"*/{name}/*" for name in EXCLUDED_DIRS)
DETECT_SECRETS_EXCLUDE = (
    r"(^|/)(" + "|".join(name.replace(".", r"\.") for name in EXCLUDED_DIRS) + r")/"
)
#: Runs ``"$@"`` with its standard output sent to the file ``$1``.
_TO_FILE = 'out="$1"; shift; exec "$@" > "$out"'


class ScanParameters(Parameters):
    """``with:`` of a ``scan`` stage."""

    tools: Choices[Tool] = ["bandit", "detect-secrets"]
    paths: WorkspacePaths = ["."]
    fail_on: ScanSeverity = "high"
    #: A baseline file in the repository ("" for none).
    baseline: OptionalWorkspaceFile = ""
    shell: Shell = "sh"


PARAMETERS = tuple(ScanParameters.model_fields)


class ScanStage(ReportingStage[ScanParameters]):
    name = "scan"
    description = "Security scan (bandit, detect-secrets; others via SARIF) with a severity gate"
    parameters = ScanParameters

    def check(self, spec: StageSpec, params: ScanParameters | None) -> Iterable[tuple[str, str]]:
        if params is not None:
            yield from self.tools_problems(spec, params.tools)

    async def execute(self, ctx: StageContext, params: ScanParameters) -> StageOutcome:
        tools = await require_tools(ctx, "scan", params.tools)
        baseline: Baseline | None = None
        if params.baseline:
            baseline = await parse_report(ctx, load_baseline, ctx.workspace / params.baseline)
        folder = await prepare_reports_dir(ctx)

        exit_code, sarif_files = await run_sarif_commands(ctx, params.shell, folder)

        findings: list[Finding] = []
        parsed: list[Path] = []
        if "bandit" in tools:
            report = folder / "bandit.json"
            argv = [
                tools["bandit"],
                "-r",
                *params.paths,
                "-x",
                BANDIT_EXCLUDE,
                "-f",
                "json",
                "-o",
                str(report),
                "-q",
                "--exit-zero",
            ]
            await run_tool(ctx, "bandit", argv, report, folder)
            findings += await parse_report(ctx, parse_bandit_json, report, root=ctx.workspace)
            parsed.append(report)
        if "detect-secrets" in tools:
            report = folder / "detect-secrets.json"
            search = ctx.env.get("PATH")
            found = await trio.to_thread.run_sync(lambda: shutil.which("sh", path=search))
            shell = found or "/bin/sh"
            # detect-secrets writes its JSON (hashed secrets) to stdout: keep
            # it out of the log by redirecting it to the report file.
            argv = [
                shell,
                "-c",
                _TO_FILE,
                "sh",
                str(report),
                tools["detect-secrets"],
                "scan",
                "--all-files",
                "--exclude-files",
                DETECT_SECRETS_EXCLUDE,
                *params.paths,
            ]
            await run_tool(ctx, "detect-secrets", argv, report, folder)
            findings += await parse_report(
                ctx, parse_detect_secrets_json, report, root=ctx.workspace
            )
            parsed.append(report)
        for sarif in sarif_files:
            findings += await parse_report(
                ctx, parse_sarif, sarif, root=ctx.workspace, security=True
            )
            parsed.append(sarif)
        if not parsed:
            raise no_findings_report("scan", exit_code)

        if params.baseline:
            # the baseline's fingerprints look like secrets to detect-secrets
            own = PurePosixPath(params.baseline).as_posix()
            findings = [f for f in findings if f.file != own]
        findings = await settle_findings(findings, ctx.workspace, baseline)
        findings = mark_scan_gate(findings, params.fail_on)
        gate = scan_gate(findings, params.fail_on)
        sources = relative_sources(parsed, folder)
        return await finish_findings(ctx, "scan", findings, gate, sources, exit_code)


@hookimpl
def conveyor_stage_kinds() -> list[StageKind]:
    return [ScanStage()]
