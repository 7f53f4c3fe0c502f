"""Fingerprints and baselines."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from conveyor.daemon.reports import Finding
from conveyor.plugins.reports import (
    Baseline,
    BaselineEntry,
    ReportError,
    apply_baseline,
    baseline_document,
    fingerprint,
    load_baseline,
    parse_bandit_json,
    parse_detect_secrets_json,
    parse_ruff_json,
    with_fingerprints,
)
from tests.unit.reports.support import DATA, GENERATED_ROOT, WORKSPACE, leaked


def bandit_findings(root: Path = WORKSPACE) -> list[Finding]:
    return with_fingerprints(parse_bandit_json(DATA / "bandit.json", root=WORKSPACE), root)


def write_baseline(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


# --- fingerprints -------------------------------------------------------------


def test_fingerprints_are_16_hex_digits_and_deterministic() -> None:
    findings = bandit_findings()
    assert all(re.fullmatch(r"[0-9a-f]{16}", f.fingerprint) for f in findings)
    assert [f.fingerprint for f in findings] == [f.fingerprint for f in bandit_findings()]
    assert [fingerprint(f, WORKSPACE) for f in findings] == [f.fingerprint for f in findings]
    # everything else is unchanged
    assert [dataclasses.replace(f, fingerprint="") for f in findings] == parse_bandit_json(
        DATA / "bandit.json", root=WORKSPACE
    )


def test_fingerprints_differ_across_rules_files_and_lines() -> None:
    b105, b307, b324, b324_again, b101 = bandit_findings()
    assert len({b105.fingerprint, b307.fingerprint, b324.fingerprint, b101.fingerprint}) == 4
    # same line, other rule
    assert fingerprint(dataclasses.replace(b324, rule="B303"), WORKSPACE) != b324.fingerprint
    # same rule and line content, other file
    moved = dataclasses.replace(b324, file="src/shop/other.py")
    assert fingerprint(moved, WORKSPACE) != b324.fingerprint
    # two findings of one rule on one line share the fingerprint (the column is not hashed)
    assert b324.fingerprint == b324_again.fingerprint


def test_fingerprints_survive_code_moving_to_another_line(tmp_path: Path) -> None:
    before = bandit_findings()
    moved_root = tmp_path / "checkout"
    shutil.copytree(WORKSPACE, moved_root)
    admin = moved_root / "src" / "shop" / "admin.py"
    lines = admin.read_text().splitlines(keepends=True)
    admin.write_text("".join([*lines[:2], "# a new comment\n", "\n", *lines[2:]]))
    after = [
        dataclasses.replace(f, line=f.line + 2) if f.file == "src/shop/admin.py" else f
        for f in before
    ]
    assert [fingerprint(f, moved_root) for f in after] == [f.fingerprint for f in before]
    # at the old line numbers, the content (hence the fingerprint) differs
    assert fingerprint(before[1], moved_root) != before[1].fingerprint


def test_fingerprint_of_an_unreadable_or_outside_file() -> None:
    finding = Finding(tool="ruff", rule="F401", severity="error", file="missing.py", line=3)
    outside = dataclasses.replace(finding, file="../../../../etc/passwd")
    no_line = dataclasses.replace(finding, line=0)
    beyond = dataclasses.replace(finding, file="src/shop/cart.py", line=10_000)
    prints = {fingerprint(f, WORKSPACE) for f in (finding, outside, no_line, beyond)}
    assert all(re.fullmatch(r"[0-9a-f]{16}", p) for p in prints)
    assert fingerprint(finding, WORKSPACE) == fingerprint(no_line, WORKSPACE)


def test_fingerprints_of_secret_findings_do_not_reveal_them() -> None:
    findings = with_fingerprints(
        parse_detect_secrets_json(DATA / "detect-secrets.json", root=WORKSPACE), WORKSPACE
    )
    assert all(f.fingerprint for f in findings)
    assert leaked(findings) == []


def test_ruff_fingerprints_read_lines_relative_to_the_given_root() -> None:
    findings = parse_ruff_json(DATA / "ruff.json", root=GENERATED_ROOT)
    f401_json, f401_os = with_fingerprints(findings, WORKSPACE)[2:4]
    assert f401_json.fingerprint != f401_os.fingerprint  # "import json" vs "import os"


# --- baseline files -----------------------------------------------------------


def test_load_and_apply_a_baseline(tmp_path: Path) -> None:
    findings = bandit_findings()
    path = write_baseline(
        tmp_path / "baseline.json",
        {
            "version": 1,
            "findings": [
                {"fingerprint": findings[1].fingerprint, "reason": "admin console is local only"},
                {"tool": "bandit", "rule": "B101", "file": "tests/*", "reason": "asserts in tests"},
                {"tool": "bandit", "rule": "B324", "file": "docs/*"},
            ],
        },
    )
    baseline = load_baseline(path)
    assert baseline == Baseline(
        (
            BaselineEntry(
                fingerprint=findings[1].fingerprint, reason="admin console is local only"
            ),
            BaselineEntry(tool="bandit", rule="B101", file="tests/*", reason="asserts in tests"),
            BaselineEntry(tool="bandit", rule="B324", file="docs/*"),
        )
    )
    applied = apply_baseline(findings, baseline)
    assert [(f.rule, f.baselined) for f in applied] == [
        ("B105", False),
        ("B307", True),  # fingerprint
        ("B324", False),
        ("B324", False),  # the glob does not match src/shop/admin.py
        ("B101", True),  # tool + rule + glob
    ]
    assert [dataclasses.replace(f, baselined=False) for f in applied] == findings


def test_rule_entries_without_a_file_match_every_file() -> None:
    baseline = Baseline((BaselineEntry(tool="bandit", rule="B324"),))
    assert [f.baselined for f in apply_baseline(bandit_findings(), baseline)] == [
        False,
        False,
        True,
        True,
        False,
    ]


def test_fingerprint_entries_need_fingerprinted_findings() -> None:
    findings = bandit_findings()
    baseline = Baseline((BaselineEntry(fingerprint=findings[0].fingerprint),))
    unfingerprinted = parse_bandit_json(DATA / "bandit.json", root=WORKSPACE)
    assert not any(f.baselined for f in apply_baseline(unfingerprinted, baseline))
    assert apply_baseline(findings, baseline)[0].baselined


def test_already_baselined_findings_stay_baselined() -> None:
    finding = dataclasses.replace(bandit_findings()[0], baselined=True)
    assert apply_baseline([finding], Baseline()) == [finding]


def test_baseline_document_round_trip(tmp_path: Path) -> None:
    findings = bandit_findings()
    document = baseline_document(findings[:4])
    assert document["version"] == 1
    # one entry per fingerprint (the two B324 on one line share one), sorted by place
    assert document["findings"] == [
        {"fingerprint": f.fingerprint, "tool": "bandit", "rule": f.rule,
         "file": "src/shop/admin.py", "reason": ""}
        for f in findings[:3]
    ]  # fmt: skip
    path = write_baseline(tmp_path / "baseline.json", document)
    applied = apply_baseline(findings, load_baseline(path))
    assert [f.baselined for f in applied] == [True, True, True, True, False]


def test_baseline_document_needs_fingerprints() -> None:
    findings = parse_bandit_json(DATA / "bandit.json", root=WORKSPACE)
    with pytest.raises(ValueError, match=r"bandit B105 at src/shop/admin.py:5 has no fingerprint"):
        baseline_document(findings)


def test_missing_baseline(tmp_path: Path) -> None:
    with pytest.raises(ReportError) as caught:
        load_baseline(tmp_path / "baseline.json")
    assert str(caught.value) == f"{tmp_path / 'baseline.json'}: baseline file not found"


NEEDS_RULE = (
    "findings[0]: needs a 'fingerprint', or a 'tool' and a 'rule' (with an optional 'file' glob)"
)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("{", "not valid JSON: Expecting property name enclosed in double quotes "
              "(line 1, column 2)"),
        ([], 'expected a baseline object {"version": 1, "findings": [...]}, got a list'),
        ({"findings": []}, "missing 'version' (expected 1)"),
        ({"version": 2, "findings": []}, "unsupported baseline version 2, expected 1"),
        ({"version": True, "findings": []}, "unsupported baseline version True, expected 1"),
        ({"version": 1}, "missing 'findings' (a list of accepted findings)"),
        ({"version": 1, "findings": {}}, "'findings' should be a list, got an object"),
        ({"version": 1, "findings": [{"fingerprint": "0123456789abcdef"}, "B101"]},
         "findings[1]: expected an object, got a string"),
        ({"version": 1, "findings": [{"tool": "bandit", "reason": "no rule"}]},
         NEEDS_RULE),
        ({"version": 1, "findings": [{}, {"tool": "bandit", "rules": "B101"}]},
         NEEDS_RULE),
        ({"version": 1, "findings": [{"tool": "bandit", "rule": "B1", "severity": "low"}]},
         "findings[0]: unknown key 'severity' "
         "(an entry has: fingerprint, tool, rule, file, reason)"),
        ({"version": 1, "findings": [{"fingerprint": "ABC"}]},
         "findings[0]: 'fingerprint' should be 16 lowercase hex digits, got 'ABC'"),
        ({"version": 1, "findings": [{"tool": "bandit", "rule": 101}]},
         "findings[0]: 'rule' should be a string, got a number"),
    ],
)  # fmt: skip
def test_malformed_baselines(tmp_path: Path, document: Any, problem: str) -> None:
    path = write_baseline(tmp_path / "baseline.json", document)
    with pytest.raises(ReportError) as caught:
        load_baseline(path)
    assert str(caught.value) == f"{path}: {problem}"
