"""Parsing tool reports into :mod:`conveyor.plugin` records (findings, test
results), and gates.

Used by the ``lint``, ``test`` and ``scan`` stage kinds:

* findings parsers for ruff JSON, SARIF 2.1.0, bandit JSON and detect-secrets
  JSON, with file paths relative to the workspace and redacted messages;
* :func:`redact`, so secrets never reach logs, results or the API;
* fingerprints and baselines, to accept known findings;
* JUnit XML parsing and flaky-test detection;
* counts and the gates' decisions, with reasons for the user, and the
  findings each gate fails on.

Everything here only reads the files it is given; a malformed or missing
report raises :class:`ReportError`, whose message names the file.
"""

from conveyor.plugins.reports._files import ReportError
from conveyor.plugins.reports.baseline import (
    Baseline,
    BaselineEntry,
    apply_baseline,
    baseline_document,
    fingerprint,
    load_baseline,
    with_fingerprints,
)
from conveyor.plugins.reports.findings import (
    parse_bandit_json,
    parse_detect_secrets_json,
    parse_ruff_json,
    parse_sarif,
)
from conveyor.plugins.reports.gates import (
    LINT_LEVELS,
    SCAN_SEVERITIES,
    LintLevel,
    ScanSeverity,
    finding_counts,
    lint_gate,
    mark_lint_gate,
    mark_scan_gate,
    scan_gate,
    scan_rank,
    test_gate,
)
from conveyor.plugins.reports.junit import JUnitResult, flaky_tests, parse_junit
from conveyor.plugins.reports.redaction import redact, redact_credentials

__all__ = [
    "LINT_LEVELS",
    "SCAN_SEVERITIES",
    "Baseline",
    "BaselineEntry",
    "JUnitResult",
    "LintLevel",
    "ReportError",
    "ScanSeverity",
    "apply_baseline",
    "baseline_document",
    "finding_counts",
    "fingerprint",
    "flaky_tests",
    "lint_gate",
    "load_baseline",
    "mark_lint_gate",
    "mark_scan_gate",
    "parse_bandit_json",
    "parse_detect_secrets_json",
    "parse_junit",
    "parse_ruff_json",
    "parse_sarif",
    "redact",
    "redact_credentials",
    "scan_gate",
    "scan_rank",
    "test_gate",
    "with_fingerprints",
]
