"""The built-in reporting kinds run in-process (the ``local`` executor, a real
stage log): parameters as pydantic models, and file reads off the trio loop."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from conveyor.plugin import StageKind, StageSpec, StageStatus
from conveyor.plugins.lint import LintStage
from conveyor.plugins.reporting import processes
from conveyor.plugins.reports import baseline as baseline_module
from conveyor.plugins.run import RunStage
from conveyor.plugins.scan import ScanStage
from conveyor.plugins.test import TestStage
from tests.support.plugins import stage_context
from tests.support.realproject import PRE_COMMIT, UNUSED_IMPORT, make_realproject
from tests.support.repos import git

SARIF = {
    "version": "2.1.0",
    "runs": [
        {
            "tool": {"driver": {"name": "checker", "rules": [{"id": "C1"}]}},
            "results": [
                {
                    "ruleId": "C1",
                    "level": "error",
                    "message": {"text": "bad call"},
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": {"uri": "src/app.py"},
                                "region": {"startLine": 2},
                            }
                        }
                    ],
                }
            ],
        }
    ],
}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("import os\nos.system(cmd)\n")
    (root / "report.sarif").write_text(json.dumps(SARIF))
    return root


@pytest.fixture
def source_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads in which fingerprints read source files."""
    threads: list[str] = []
    read = baseline_module._SourceLines._read

    def recording(path: Path) -> list[bytes] | None:
        threads.append(threading.current_thread().name)
        return read(path)

    monkeypatch.setattr(baseline_module._SourceLines, "_read", staticmethod(recording))
    return threads


async def test_lint_reads_sources_for_fingerprints_in_a_worker_thread(
    workspace: Path, tmp_path: Path, source_reads: list[str]
) -> None:
    stage = {
        "uses": "lint",
        "run": 'cp report.sarif "$CONVEYOR_REPORTS_DIR/checker.sarif"',
        "with": {"tools": [], "fail_on": ["error"]},
    }
    ctx, log = stage_context(stage, workspace, tmp_path / "home")
    outcome = await LintStage().run(ctx)
    assert outcome.status is StageStatus.FAILED
    assert outcome.reason == "1 finding at levels error (C1); first: src/app.py:2 C1"
    assert outcome.report is not None
    [finding] = outcome.report.findings
    assert (finding.file, finding.line, len(finding.fingerprint)) == ("src/app.py", 2, 16)
    assert source_reads, "the fingerprint read the line the finding points at"
    assert threading.current_thread().name not in source_reads, "never on the trio loop"
    text = (tmp_path / "home" / "logs" / "s.log").read_text()
    assert "src/app.py:2  error  checker/C1 (fails gate)  bad call" in text
    assert log.size == len(text.encode())


async def test_scan_applies_its_baseline_off_the_loop(
    workspace: Path, tmp_path: Path, source_reads: list[str]
) -> None:
    accepted = {"version": 1, "findings": [{"tool": "checker", "rule": "C1", "reason": "known"}]}
    (workspace / "baseline.json").write_text(json.dumps(accepted))
    stage = {
        "uses": "scan",
        "run": 'cp report.sarif "$CONVEYOR_REPORTS_DIR/checker.sarif"',
        "with": {"tools": [], "baseline": "baseline.json"},
    }
    ctx, _ = stage_context(stage, workspace, tmp_path / "home")
    outcome = await ScanStage().run(ctx)
    assert outcome.status is StageStatus.SUCCEEDED, outcome.reason
    assert outcome.report is not None and outcome.report.findings[0].baselined
    assert source_reads and threading.current_thread().name not in source_reads


async def test_invalid_parameters_fail_the_attempt_with_the_first_problem(
    workspace: Path, tmp_path: Path
) -> None:
    ctx, _ = stage_context(
        {"uses": "test", "run": "true", "with": {"rerun_failed": 7}}, workspace, tmp_path
    )
    outcome = await TestStage().run(ctx)
    assert outcome.status is StageStatus.FAILED
    assert outcome.error_type == "invalid_parameters"
    assert outcome.reason == "with.rerun_failed: expected an integer from 0 to 3, got the integer 7"


@pytest.mark.parametrize(
    ("kind", "stage", "expected"),
    [
        (
            LintStage(),
            {"uses": "lint", "with": {"tool": ["ruff"]}},
            [
                (
                    "with.tool",
                    "unknown parameter 'tool'; the lint kind accepts: tools, paths, fail_on,"
                    " shell; did you mean 'tools'?",
                )
            ],
        ),
        (
            LintStage(),
            {"uses": "lint", "with": {"tools": [], "fail_on": "error"}},
            [
                (
                    "with.tools",
                    "a lint stage without 'run' commands needs at least one tool in 'tools'",
                ),
            ],
        ),
        (
            LintStage(),
            {"uses": "lint", "with": {"fail_on": ["error", "fatal"], "paths": ["../x"]}},
            [
                ("with.paths[0]", "'../x': must stay inside the repository (no '..')"),
                ("with.fail_on[1]", "unknown value 'fatal'; expected 'note', 'warning' or 'error'"),
            ],
        ),
        (
            LintStage(),
            {"uses": "lint", "with": {"fail_on": ["error", "error"], "paths": []}},
            [
                ("with.paths", "expected at least one path"),
                ("with.fail_on", "values must not repeat"),
            ],
        ),
        (
            ScanStage(),
            {"uses": "scan", "with": {"fail_on": "severe", "baseline": "/etc/passwd"}},
            [
                (
                    "with.fail_on",
                    "expected 'low', 'medium', 'high' or 'critical', got the string 'severe'",
                ),
                ("with.baseline", "'/etc/passwd': must be relative to the repository root"),
            ],
        ),
        (
            TestStage(),
            {"uses": "test", "with": {"allow_flaky": "maybe"}},
            [
                (
                    "run",
                    "a 'test' stage needs a command in 'run' that writes JUnit XML into"
                    " $CONVEYOR_REPORTS_DIR",
                ),
                ("with.allow_flaky", "expected true or false, got the string 'maybe'"),
            ],
        ),
        (
            RunStage(),
            {"uses": "run", "with": {"shell": "zsh", "shel": "sh"}},
            [
                ("run", "a 'run' stage needs at least one command in 'run'"),
                ("with.shell", "expected 'sh' or 'bash', got the string 'zsh'"),
                (
                    "with.shel",
                    "unknown parameter 'shel'; the run kind accepts: shell; did you mean 'shell'?",
                ),
            ],
        ),
    ],
)
def test_parameter_problems_of_the_builtin_kinds(
    kind: StageKind,
    stage: dict[str, object],
    expected: list[tuple[str, str]],
) -> None:
    assert list(kind.validate(StageSpec.model_validate(stage))) == expected


def test_valid_parameters_have_no_problems() -> None:
    cases: list[tuple[StageKind, dict[str, object]]] = [
        (LintStage(), {"uses": "lint", "with": {"tools": "ruff", "paths": "src"}}),
        (LintStage(), {"uses": "lint", "run": "x", "with": {"tools": []}}),
        (ScanStage(), {"uses": "scan", "with": {"baseline": None, "fail_on": "low"}}),
        (TestStage(), {"uses": "test", "run": "pytest", "with": {"rerun_failed": 3}}),
        (RunStage(), {"uses": "run", "run": "true", "with": {"shell": "bash"}}),
    ]
    for kind, stage in cases:
        assert list(kind.validate(StageSpec.model_validate(stage))) == []


# -- on the realistic fixture project (issue 8) -------------------------------


@pytest.fixture
def bookshelf(tmp_path: Path) -> Path:
    return make_realproject(tmp_path / "bookshelf").path


async def test_lint_never_applies_the_projects_fix_setting(bookshelf: Path, tmp_path: Path) -> None:
    before = git("status", "--porcelain", "--ignored", "--untracked-files=all", cwd=bookshelf)
    ctx, _ = stage_context({"uses": "lint"}, bookshelf, tmp_path / "home")
    outcome = await LintStage().run(ctx)
    assert outcome.report is not None
    [finding] = outcome.report.findings
    assert (finding.rule, finding.file, finding.line, finding.fails_gate) == (
        "F401",
        *UNUSED_IMPORT,
        True,
    )
    assert git("diff", "--stat", cwd=bookshelf) == ""
    after = git("status", "--porcelain", "--ignored", "--untracked-files=all", cwd=bookshelf)
    assert before == after == "", "no .ruff_cache, no rewritten file"


async def test_a_tool_neither_on_path_nor_beside_conveyor_fails_the_stage(
    bookshelf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-scripts"
    empty.mkdir()
    monkeypatch.setattr(processes, "DAEMON_SCRIPTS", str(empty))
    ctx, _ = stage_context({"uses": "lint"}, bookshelf, tmp_path / "home")
    outcome = await LintStage().run(dataclasses.replace(ctx, env={"PATH": "/nonexistent"}))
    assert outcome.status is StageStatus.FAILED
    assert outcome.error_type == "tool_missing" and outcome.system_error
    assert outcome.reason == (
        f"lint tool 'ruff' is not installed (not on the stage's PATH, nor in Conveyor's"
        f" environment, {empty})"
    )


async def test_tools_off_the_stage_path_are_taken_from_conveyors_environment(
    bookshelf: Path, tmp_path: Path
) -> None:
    ctx, _ = stage_context(
        {"uses": "scan", "with": {"tools": ["bandit"]}}, bookshelf, tmp_path / "home"
    )
    outcome = await ScanStage().run(dataclasses.replace(ctx, env={"PATH": "/nonexistent"}))
    assert outcome.report is not None, outcome.reason
    assert "B324" in {f.rule for f in outcome.report.findings}


async def test_scan_marks_and_logs_the_findings_its_gate_fails_on_first(
    bookshelf: Path, tmp_path: Path
) -> None:
    ctx, log = stage_context({"uses": "scan"}, bookshelf, tmp_path / "home")
    outcome = await ScanStage().run(ctx)
    assert outcome.status is StageStatus.FAILED and outcome.report is not None
    findings = outcome.report.findings
    failing = [f for f in findings if f.fails_gate]
    assert failing == findings[: len(failing)], "the report lists them first"
    assert {f.severity for f in failing} == {"high"} and len(failing) == 7
    assert outcome.reason.endswith(f"; first: {PRE_COMMIT}:3 Hex High Entropy String")
    text = log.path.read_text()
    first = text.index("  high  ")
    assert first < text.index("  low  ") and "(fails gate)" in text[first:].splitlines()[0]
    assert f"... and {len(findings) - 10} more not shown" in text
