"""Findings parsers against real ruff, bandit and detect-secrets output and SARIF."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from conveyor.plugins.reports import (
    ReportError,
    parse_bandit_json,
    parse_detect_secrets_json,
    parse_ruff_json,
    parse_sarif,
)
from conveyor.plugins.reports._files import relative_path
from conveyor.plugins.reports.findings import security_severity
from tests.unit.reports.support import (
    AWS_KEY_ID,
    DATA,
    GENERATED_ROOT,
    HANDWRITTEN,
    PASSWORD,
    SCANNER_ROOT,
    WORKSPACE,
    leaked,
    summary,
)


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


# --- ruff ---------------------------------------------------------------------


def test_ruff_json() -> None:
    findings = parse_ruff_json(DATA / "ruff.json", root=GENERATED_ROOT)
    assert summary(findings) == [
        ("syntax-error", "error", "report.ipynb", 1, 12),
        ("syntax-error", "error", "report.ipynb", 1, 13),
        ("F401", "error", "src/shop/cart.py", 3, 8),
        ("F401", "error", "src/shop/cart.py", 4, 8),
        ("E501", "error", "src/shop/cart.py", 13, 101),
    ]
    assert {f.tool for f in findings} == {"ruff"}
    assert [f.message for f in findings] == [
        "Expected a parameter or the end of the parameter list (notebook cell 3)",
        "Expected `)`, found newline (notebook cell 3)",
        "`json` imported but unused",
        "`os` imported but unused",
        "Line too long (106 > 100)",
    ]
    assert not any(f.baselined or f.fingerprint for f in findings)


def test_ruff_paths_relative_to_any_spelling_of_the_root(tmp_path: Path) -> None:
    # the workspace reached through a symbolic link: ruff writes the real path.
    # Re-root the report at a real folder of this test, wherever the checkout is.
    real = tmp_path / "real" / "workspace"
    real.mkdir(parents=True)
    report = tmp_path / "ruff.json"
    report.write_text((DATA / "ruff.json").read_text().replace(str(GENERATED_ROOT), str(real)))
    link = tmp_path / "checkout"
    link.symlink_to(real.parent, target_is_directory=True)
    findings = parse_ruff_json(report, root=link / "workspace")
    assert [f.file for f in findings] == ["report.ipynb"] * 2 + ["src/shop/cart.py"] * 3


def test_ruff_older_syntax_error_spellings(tmp_path: Path) -> None:
    def diagnostic(code: str | None, message: str) -> dict[str, Any]:
        return {
            "cell": None,
            "code": code,
            "filename": str(tmp_path / "app.py"),
            "location": {"column": 4, "row": 1},
            "message": message,
            "noqa_row": None,
            "url": None,
        }

    report = write_json(
        tmp_path / "ruff.json",
        [
            diagnostic(None, "SyntaxError: Expected an expression"),  # ruff 0.5 - 0.11
            diagnostic("E999", "SyntaxError: invalid syntax"),  # before 0.5
        ],
    )
    findings = parse_ruff_json(report, root=tmp_path)
    assert summary(findings) == [
        ("syntax-error", "error", "app.py", 1, 4),
        ("syntax-error", "error", "app.py", 1, 4),
    ]
    assert [f.message for f in findings] == ["Expected an expression", "invalid syntax"]


def test_ruff_masks_credentials_in_messages(tmp_path: Path) -> None:
    report = write_json(
        tmp_path / "ruff.json",
        [{"code": "S105", "filename": "a.py", "location": {"row": 2, "column": 1},
          "message": f"Possible hardcoded password assigned to: {AWS_KEY_ID}"}],
    )  # fmt: skip
    [finding] = parse_ruff_json(report, root=tmp_path)
    assert finding.message == "Possible hardcoded password assigned to: ***"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty file, expected a JSON document (did the tool crash?)"),
        ("[{]", "not valid JSON: Expecting property name enclosed in double quotes "
                "(line 1, column 3)"),
        ('{"a": 1}', "expected a JSON list of diagnostics (ruff check --output-format json), "
                     "got an object"),
        ("[1]", "diagnostic 1: expected an object, got a number"),
        ('[{"filename": "a.py", "location": {"row": "3"}}]',
         "diagnostic 1 location: 'row' should be an integer, got a string"),
        ('[{"filename": 7}]', "diagnostic 1: 'filename' should be a string, got a number"),
    ],
)  # fmt: skip
def test_ruff_malformed(tmp_path: Path, content: str, problem: str) -> None:
    report = tmp_path / "reports" / "ruff.json"
    report.parent.mkdir()
    report.write_text(content)
    with pytest.raises(ReportError) as caught:
        parse_ruff_json(report, root=tmp_path)
    assert str(caught.value) == f"{report}: {problem}"
    assert caught.value.path == str(report)
    assert caught.value.problem == problem


def test_missing_and_unreadable_reports(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"ruff\.json: file not found$"):
        parse_ruff_json(tmp_path / "ruff.json", root=tmp_path)
    with pytest.raises(ReportError, match=r"is a directory, expected a file$"):
        parse_ruff_json(tmp_path, root=tmp_path)
    (tmp_path / "latin1.json").write_bytes(b'["caf\xe9"]')
    with pytest.raises(ReportError, match=r"not valid UTF-8 text \(byte 5\)$"):
        parse_ruff_json(tmp_path / "latin1.json", root=tmp_path)


def test_reports_over_the_size_limit_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("conveyor.plugins.reports._files.MAX_REPORT_BYTES", 1024 * 1024)
    report = tmp_path / "big.json"
    report.write_text("[" + " " * (1024 * 1024) + "]")
    with pytest.raises(ReportError, match=r"too large to parse \(1\.0 MB; the limit is 1\.0 MB\)$"):
        parse_ruff_json(report, root=tmp_path)


def test_ruff_sarif() -> None:
    findings = parse_sarif(DATA / "ruff.sarif", root=GENERATED_ROOT)
    # SARIF numbers notebook lines across all cells; the JSON output per cell
    assert summary(findings) == [
        ("invalid-syntax", "error", "report.ipynb", 3, 12),
        ("invalid-syntax", "error", "report.ipynb", 3, 13),
        ("F401", "error", "src/shop/cart.py", 3, 8),
        ("F401", "error", "src/shop/cart.py", 4, 8),
        ("E501", "error", "src/shop/cart.py", 13, 101),
    ]
    assert {f.tool for f in findings} == {"ruff"}
    assert findings[2].message == "`json` imported but unused"


# --- bandit -------------------------------------------------------------------


def test_bandit_json() -> None:
    findings = parse_bandit_json(DATA / "bandit.json", root=WORKSPACE)
    assert summary(findings) == [
        ("B105", "low", "src/shop/admin.py", 5, 12),
        ("B307", "medium", "src/shop/admin.py", 9, 12),
        ("B324", "high", "src/shop/admin.py", 13, 12),
        ("B324", "high", "src/shop/admin.py", 13, 59),
        ("B101", "low", "tests/check_admin.py", 5, 5),
    ]
    assert {f.tool for f in findings} == {"bandit"}
    assert findings[0].message == "Possible hardcoded password: '***'"
    assert findings[1].message == (
        "Use of possibly insecure function - consider using safer ast.literal_eval."
    )


def test_bandit_never_reveals_the_password_or_the_code() -> None:
    raw = json.loads((DATA / "bandit.json").read_text())
    assert PASSWORD in raw["results"][0]["issue_text"]  # what bandit itself writes
    findings = parse_bandit_json(DATA / "bandit.json", root=WORKSPACE)
    assert leaked(findings) == []
    text = repr(findings)
    for result in raw["results"]:
        for line in result["code"].splitlines():
            code = line.split(" ", 1)[1].strip() if " " in line else ""
            if code:
                assert code not in text


def test_bandit_absolute_paths_and_missing_columns(tmp_path: Path) -> None:
    report = write_json(
        tmp_path / "bandit.json",
        {
            "errors": [],
            "results": [
                {
                    "filename": str(tmp_path / "pkg" / "mod.py"),
                    "issue_severity": "UNDEFINED",
                    "issue_text": 'Possible hardcoded password: "s3cr3t"',
                    "line_number": 4,
                    "test_id": "B106",
                }
            ],
        },
    )
    [finding] = parse_bandit_json(report, root=tmp_path)
    assert summary([finding]) == [("B106", "low", "pkg/mod.py", 4, 0)]
    assert finding.message == 'Possible hardcoded password: "***"'


def test_bandit_malformed(tmp_path: Path) -> None:
    report = write_json(tmp_path / "bandit.json", {"errors": []})
    with pytest.raises(ReportError, match="missing 'results' \\(is this a bandit -f json report"):
        parse_bandit_json(report, root=tmp_path)
    report = write_json(tmp_path / "bandit.json", {"results": [{"filename": "a.py"}]})
    with pytest.raises(ReportError, match=r"result 1: missing 'test_id'$"):
        parse_bandit_json(report, root=tmp_path)


# --- detect-secrets -------------------------------------------------------------


def test_detect_secrets_json() -> None:
    findings = parse_detect_secrets_json(DATA / "detect-secrets.json", root=WORKSPACE)
    assert summary(findings) == [
        ("Base64 High Entropy String", "high", "deploy/app.env", 2, 0),
        ("AWS Access Key", "high", "deploy/credentials.ini", 3, 0),
        ("Secret Keyword", "high", "src/shop/admin.py", 5, 0),
    ]
    assert {f.tool for f in findings} == {"detect-secrets"}
    assert [f.message for f in findings] == [
        "possible Base64 High Entropy String committed",
        "possible AWS Access Key committed",
        "possible Secret Keyword committed",
    ]


def test_detect_secrets_never_reveals_secrets_or_hashes() -> None:
    findings = parse_detect_secrets_json(DATA / "detect-secrets.json", root=WORKSPACE)
    assert leaked(findings) == []


def test_detect_secrets_audited_false_positives_come_back_baselined(tmp_path: Path) -> None:
    entry = {"type": "Hex High Entropy String", "hashed_secret": "0" * 40, "line_number": 2}
    report = write_json(
        tmp_path / "secrets.json",
        {"results": {"a.cfg": [{**entry, "is_secret": False}, {**entry, "line_number": 3}]}},
    )
    findings = parse_detect_secrets_json(report, root=tmp_path)
    assert [(f.line, f.baselined) for f in findings] == [(2, True), (3, False)]
    assert "0" * 40 not in repr(findings)


def test_detect_secrets_malformed(tmp_path: Path) -> None:
    report = write_json(tmp_path / "secrets.json", {"results": {"a.cfg": {"type": "x"}}})
    with pytest.raises(ReportError, match=r"results for 'a\.cfg': expected a list, got an object$"):
        parse_detect_secrets_json(report, root=tmp_path)


# --- SARIF --------------------------------------------------------------------

SCANNER = HANDWRITTEN / "scanner.sarif"


def test_sarif_levels() -> None:
    findings = parse_sarif(SCANNER, root=SCANNER_ROOT)
    assert [(f.tool, *row) for f, row in zip(findings, summary(findings), strict=True)] == [
        ("CodeQL", "py/code-injection", "error", "src/shop/admin.py", 9, 12),
        # no level: the rule's default (found through toolComponent + index)
        ("CodeQL", "py/weak-sensitive-data-hashing", "warning", "src/shop/admin.py", 13, 58),
        # location through the run's artifacts list
        ("CodeQL", "py/clear-text-logging-sensitive-data", "error", "src/shop/admin.py", 5, 1),
        ("CodeQL", "py/unused-import", "note", "src/shop/cart.py", 3, 1),
        ("CodeQL", "py/unused-import", "note", "src/shop/cart.py", 4, 1),
        # the first location with a physical location; unknown uriBaseId: the checkout
        ("Semgrep OSS", "python.lang.security.audit.eval-detected.eval-detected", "error",
         "src/shop/admin.py", 9, 12),
        ("Semgrep OSS", "generic.secrets.security.detected-aws-access-key-id-value", "error",
         "deploy/credentials.ini", 3, 21),
        # no level, no default: warning; outside the checkout: relative, never absolute
        ("Semgrep OSS", "python.lang.best-practice.open-never-closed", "warning",
         "../../opt/vendor/lib tools/io.py", 7, 0),
        ("Semgrep OSS", "python.lang.best-practice.open-never-closed", "note",
         "src/shop/cart.py", 0, 0),
    ]  # fmt: skip
    # an in-source suppression is baselined; the "pass" result is left out
    assert [f.baselined for f in findings] == [False] * 4 + [True] + [False] * 4
    assert findings[3].message == "Import of 'json' is not used."  # messageStrings + arguments
    # lint messages keep quoted names but never credentials
    assert (
        findings[2].message == f"This expression logs '{PASSWORD}' and the key *** as clear text."
    )
    assert findings[6].message == "AWS Access Key ID Value detected: ***"


def test_sarif_security_severity() -> None:
    findings = parse_sarif(SCANNER, root=SCANNER_ROOT, security=True)
    assert [(f.rule.rsplit(".", 1)[-1], f.severity) for f in findings] == [
        ("py/code-injection", "critical"),  # 9.3
        ("py/weak-sensitive-data-hashing", "high"),  # 7.5
        ("py/clear-text-logging-sensitive-data", "medium"),  # 4.0
        ("py/unused-import", "low"),  # no score, level note
        ("py/unused-import", "low"),
        ("eval-detected", "high"),  # no score, level error
        ("detected-aws-access-key-id-value", "high"),  # default level error
        ("open-never-closed", "medium"),  # warning
        ("open-never-closed", "low"),  # none
    ]
    # security messages are fully redacted
    assert findings[2].message == "This expression logs '***' and the key *** as clear text."
    assert leaked(findings) == []


@pytest.mark.parametrize(
    ("score", "severity"),
    [(10.0, "critical"), (9.0, "critical"), (8.9, "high"), (7.0, "high"), (6.9, "medium"),
     (4.0, "medium"), (3.9, "low"), (0.1, "low"), (0.0, "low")],
)  # fmt: skip
def test_security_severity_thresholds(score: float, severity: str) -> None:
    assert security_severity(score) == severity


def test_sarif_original_uri_base_ids_inside_the_workspace(tmp_path: Path) -> None:
    report = write_json(
        tmp_path / "a.sarif",
        {
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {"driver": {"name": "scanner", "rules": [{"id": "R1"}]}},
                    "originalUriBaseIds": {
                        "ROOT": {"uri": f"file://{tmp_path}/"},
                        "SRC": {"uri": "lib/", "uriBaseId": "ROOT"},
                    },
                    "results": [
                        {
                            "ruleIndex": 0,
                            "message": {"text": "m"},
                            "locations": [
                                {"physicalLocation": {"artifactLocation": {
                                    "uri": "my%20mod.py", "uriBaseId": "SRC"}}}
                            ],
                        }
                    ],
                }
            ],
        },
    )  # fmt: skip
    [finding] = parse_sarif(report, root=tmp_path)
    assert (finding.tool, finding.rule, finding.file) == ("scanner", "R1", "lib/my mod.py")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "expected a SARIF log (a JSON object with 'runs'), got a list"),
        ({"version": "2.0.0", "runs": []}, "unsupported SARIF version '2.0.0', expected 2.1.0"),
        ({"version": "2.1.0"}, "missing 'runs' (is this a SARIF log?)"),
        ({"runs": [{"results": [{}, 3]}]}, "run 1, result 2: expected an object, got a number"),
        ({"runs": [{"results": [{"level": 2}]}]},
         "run 1, result 1: 'level' should be a string, got a number"),
    ],
)  # fmt: skip
def test_sarif_malformed(tmp_path: Path, document: Any, problem: str) -> None:
    report = write_json(tmp_path / "scan.sarif", document)
    with pytest.raises(ReportError) as caught:
        parse_sarif(report, root=tmp_path)
    assert str(caught.value) == f"{report}: {problem}"


def test_sarif_result_without_rule_or_location(tmp_path: Path) -> None:
    report = write_json(
        tmp_path / "a.sarif", {"version": "2.1.0", "runs": [{"results": [{"message": {}}]}]}
    )
    [finding] = parse_sarif(report, root=tmp_path)
    assert finding == type(finding)(
        tool="sarif", rule="unknown-rule", severity="warning", file="", message=""
    )


# --- paths --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("src/a.py", "src/a.py"),
        ("./src/./a.py", "src/a.py"),
        ("/ws/src/a.py", "src/a.py"),
        ("/ws", ""),
        ("/wsx/a.py", "../wsx/a.py"),
        ("/usr/lib/python3/x.py", "../usr/lib/python3/x.py"),
        ("../other/a.py", "../other/a.py"),
        ("", ""),
    ],
)
def test_relative_path(name: str, expected: str) -> None:
    assert relative_path(name, Path("/ws")) == expected


def test_relative_path_of_a_relative_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert relative_path(os.path.join(tmp_path, "ws", "a.py"), Path("ws")) == "a.py"


def test_report_error() -> None:
    error = ReportError(Path("reports/junit.xml"), "not valid XML: mismatched tag (line 4)")
    assert str(error) == "reports/junit.xml: not valid XML: mismatched tag (line 4)"
    assert (error.path, error.problem) == (
        "reports/junit.xml",
        "not valid XML: mismatched tag (line 4)",
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.path, copy.problem) == (str(error), error.path, error.problem)
    assert str(ReportError("something went wrong")) == "something went wrong"
