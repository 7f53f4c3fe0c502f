"""Paths and secrets of the report fixtures (see data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

from conveyor.daemon.reports import Finding

DATA = Path(__file__).parent / "data"
#: The sample checkout the findings are about.
WORKSPACE = DATA / "workspace"
#: Where WORKSPACE was when the fixtures were generated: ruff writes absolute
#: paths, so ruff.json and ruff.sarif are parsed against it.
GENERATED_ROOT = Path("/work/main/tests/unit/reports/data/workspace")
HANDWRITTEN = DATA / "handwritten"
#: The checkout handwritten/scanner.sarif describes.
SCANNER_ROOT = Path("/builds/shop")
JUNIT = DATA / "junit"

PASSWORD = "hunter2"
AWS_KEY_ID = "AKIA3LAMCH2SHZPV0UMH"
AWS_SECRET_KEY = "eJcMnoz08j+0G5C81RqAYmByoDw3cNgEAYpDzi+q"


def hashed_secrets() -> list[str]:
    """The hashes detect-secrets wrote into its report."""
    document = json.loads((DATA / "detect-secrets.json").read_text())
    return [entry["hashed_secret"] for entries in document["results"].values() for entry in entries]


def secrets() -> list[str]:
    """Every secret (or hash of one) that must never appear in a result."""
    return [PASSWORD, AWS_KEY_ID, AWS_SECRET_KEY, *hashed_secrets()]


def leaked(findings: list[Finding]) -> list[str]:
    """The secrets found anywhere in the findings (their repr covers every field)."""
    text = repr(findings)
    return [secret for secret in secrets() if secret in text]


def summary(findings: list[Finding]) -> list[tuple[str, str, str, int, int]]:
    """(rule, severity, file, line, column) of each finding."""
    return [(f.rule, f.severity, f.file, f.line, f.column) for f in findings]
