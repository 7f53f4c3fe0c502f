"""`conveyor baseline`: the file it writes is one the scan kind reads, and it
accepts exactly the findings chosen (issue 8.4)."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from conveyor.client import baseline
from conveyor.client.errors import CommandError
from conveyor.daemon.reports import Finding
from conveyor.plugins.reports import (
    apply_baseline,
    baseline_document,
    load_baseline,
    with_fingerprints,
)
from conveyor.v1 import runs_pb2

SOURCES = {
    "src/app/settings.py": 'SECRET_KEY = "django-insecure-0123456789abcdef"\nDEBUG = False\n',
    "src/app/auth.py": (
        "import hashlib\n\ndef sign(key, data):\n    return hashlib.sha1(key + data)\n"
    ),
    "tests/fixtures/keys.py": 'AWS_KEY = "AKIAIOSFODNN7EXAMPLE"\n',
    "tests/test_app.py": "def test_a():\n    assert True\n\ndef test_b():\n    assert 1\n",
}


def scan_findings(root: Path) -> list[Finding]:
    """What a scan of a real project finds: secrets and a weak hash (high),
    asserts in tests (low), one finding a baseline already accepted."""
    for name, text in SOURCES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    findings = [
        Finding("detect-secrets", "Secret Keyword", "high", "src/app/settings.py", 1),
        Finding("bandit", "B324", "high", "src/app/auth.py", 4, 12),
        Finding("detect-secrets", "AWS Access Key", "high", "tests/fixtures/keys.py", 1),
        Finding("bandit", "B101", "low", "tests/test_app.py", 2, 5),
        Finding("bandit", "B101", "low", "tests/test_app.py", 5, 5),
        Finding("bandit", "B108", "medium", "src/app/auth.py", 1, baselined=True),
    ]
    return with_fingerprints(findings, root)


def as_proto(findings: list[Finding]) -> runs_pb2.StageReport:
    """The stage report the daemon serves for these findings."""
    return runs_pb2.StageReport(
        kind="scan",
        findings=[runs_pb2.Finding(**dataclasses.asdict(f)) for f in findings],
        gate_passed=False,
        gate_reason="3 findings at or above high (Secret Keyword, B324, AWS Access Key)",
    )


def write_baseline(
    report: runs_pb2.StageReport,
    path: Path,
    *,
    min_severity: str | None = None,
    include_baselined: bool = False,
    replace: bool = False,
) -> None:
    """What `conveyor baseline RUN STAGE --write PATH` does with a report."""
    chosen = baseline.select(report, min_severity=min_severity, include_baselined=include_baselined)
    existing = None if replace else baseline.read_existing(path)
    items = baseline.merged(existing or [], baseline.entries(chosen.findings))
    baseline.write(path, baseline.document(items))


def accepted(findings: list[Finding], path: Path) -> list[tuple[str, int]]:
    """(file, line) of the findings the scan kind baselines with ``path``
    that were not baselined before."""
    result = apply_baseline(
        [dataclasses.replace(f, baselined=False) for f in findings], load_baseline(path)
    )
    return [(f.file, f.line) for f in result if f.baselined]


def test_the_scan_kind_reads_the_file_and_baselines_exactly_the_chosen_findings(
    tmp_path: Path,
) -> None:
    findings = scan_findings(tmp_path)
    report = as_proto(findings)
    path = tmp_path / ".conveyor" / "scan-baseline.json"

    write_baseline(report, path, min_severity="high")
    assert accepted(findings, path) == [
        ("src/app/settings.py", 1),
        ("src/app/auth.py", 4),
        ("tests/fixtures/keys.py", 1),
    ]
    # the same document the plugins write for those findings
    highs = [f for f in findings if f.severity == "high"]
    assert json.loads(path.read_text()) == baseline_document(highs)

    write_baseline(report, path, replace=True)  # default: every severity
    assert len(accepted(findings, path)) == 5  # not the finding already baselined
    write_baseline(report, path, include_baselined=True, replace=True)
    assert len(accepted(findings, path)) == 6


def test_an_existing_baseline_keeps_its_entries_and_reasons(tmp_path: Path) -> None:
    findings = scan_findings(tmp_path)
    path = tmp_path / "baseline.json"
    rule = {"tool": "bandit", "rule": "B101", "file": "tests/*", "reason": "asserts in tests"}
    high = next(f for f in findings if f.rule == "B324")
    reasoned = {**baseline_document([high])["findings"][0], "reason": "HMAC-SHA1 on purpose"}
    path.write_text(json.dumps({"version": 1, "findings": [reasoned, rule]}))

    write_baseline(as_proto(findings), path, min_severity="high")
    items = json.loads(path.read_text())["findings"]
    assert items[:2] == [reasoned, rule]
    assert [item["rule"] for item in items[2:]] == ["Secret Keyword", "AWS Access Key"]
    assert len(accepted(findings, path)) == 5  # the rule entry accepts both asserts

    write_baseline(as_proto(findings), path, min_severity="critical", replace=True)
    assert json.loads(path.read_text()) == {"version": 1, "findings": []}
    assert accepted(findings, path) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        ('{"version": 2, "findings": []}', '"version": 1'),
        ('{"version": 1, "findings": {}}', "'findings' should be a list"),
    ],
)
def test_a_file_that_is_not_a_baseline_is_not_overwritten(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "notes.json"
    path.write_text(text)
    with pytest.raises(CommandError, match="use --replace to overwrite it") as info:
        write_baseline(as_proto(scan_findings(tmp_path)), path)
    assert problem in str(info.value)
    assert path.read_text() == text


def test_findings_without_a_usable_fingerprint_are_counted_not_written() -> None:
    report = runs_pb2.StageReport(
        kind="scan",
        findings=[
            runs_pb2.Finding(tool="x", rule="R1", severity="high", fingerprint=""),
            runs_pb2.Finding(tool="x", rule="R2", severity="high", fingerprint="NOT-HEX"),
            runs_pb2.Finding(tool="x", rule="R3", severity="high", fingerprint="0123456789abcdef"),
            runs_pb2.Finding(tool="x", rule="R4", severity="low", fingerprint="fedcba9876543210"),
            runs_pb2.Finding(
                tool="x", rule="R5", severity="high", fingerprint="00000000000000ff", baselined=True
            ),
        ],
    )
    chosen = baseline.select(report, min_severity="medium", include_baselined=False)
    assert [f.rule for f in chosen.findings] == ["R3"]
    assert (chosen.unfingerprinted, chosen.below, chosen.baselined) == (2, 1, 1)


def stage(name: str, **fields: object) -> runs_pb2.Stage:
    return runs_pb2.Stage(name=name, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stage_name", "message"),
    [
        ("deploy", "run r-1 has no stage 'deploy' (stages: scan, broken, unit, lint, build)"),
        ("build", "stage 'build' is a run stage: a baseline takes the findings of a scan stage"),
        ("broken", "stage 'broken' of run r-1 has no report (failed: baseline file not found)"),
        ("unit", "stage 'unit' is a test stage: a baseline takes findings"),
        ("lint", "stage 'lint' is a lint stage, which reads no baseline file"),
    ],
)
def test_only_a_stage_with_findings_makes_a_baseline(stage_name: str, message: str) -> None:
    run = runs_pb2.Run(
        id="r-1",
        stages=[
            stage("scan", report=runs_pb2.StageReport(kind="scan")),
            stage(
                "broken",
                kind="scan",
                status=runs_pb2.STAGE_STATUS_FAILED,
                reason="baseline file not found",
            ),
            stage("unit", report=runs_pb2.StageReport(kind="test")),
            stage("lint", report=runs_pb2.StageReport(kind="lint")),
            stage("build", kind="run", status=runs_pb2.STAGE_STATUS_SUCCEEDED),
        ],
    )
    assert baseline.scan_report(run, "scan").kind == "scan"
    with pytest.raises(CommandError) as info:
        baseline.scan_report(run, stage_name)
    assert message in str(info.value)


def test_the_file_is_replaced_whole_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "baseline.json"
    baseline.write(path, "first\n")  # folders made
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    path.chmod(0o640)
    baseline.write(path, "second\n")
    assert path.read_text() == "second\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["baseline.json"]  # no temporaries
