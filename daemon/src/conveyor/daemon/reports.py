"""Parsed results of lint, test and scan stages, as stored and served.

Stage kinds build a :class:`StageReport` and return it in their
:class:`~conveyor.daemon.stages.StageOutcome`; the daemon stores it with the
stage and serves it in ``Run.stages[].report``.

Findings are kept and served by gate relevance (:meth:`Finding.relevance`):
those that fail the gate first, then the others not baselined, worst
severity first, then by file and line. ``conveyor show`` lists them in the
same order (``ordered_findings`` in ``conveyor.client.render``, which keeps
its own copy of the rule: the client does not depend on the daemon).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: Findings or tests kept per report; the rest are only counted.
MAX_ITEMS = 1000

#: Severities worst first, lint levels beside the scan severities they match
#: (``error`` is ``high``, ``warning`` ``medium``, ``note`` ``low``), as in
#: ``conveyor.client.severity``.
SEVERITY_RANK = {
    "critical": 0,
    "high": 1,
    "error": 1,
    "medium": 2,
    "warning": 2,
    "low": 3,
    "note": 3,
}
#: The rank of a severity no built-in kind uses: after every known one.
UNKNOWN_SEVERITY_RANK = len(SEVERITY_RANK)
#: Test outcomes by what needs attention first; other outcomes come before
#: skipped tests.
_OUTCOME_RANK = {"failed": 0, "error": 0, "flaky": 1, "skipped": 3}


def severity_rank(severity: str) -> int:
    """0 for ``critical``, higher for milder severities; unknown ones last."""
    return SEVERITY_RANK.get(severity.lower(), UNKNOWN_SEVERITY_RANK)


@dataclass(frozen=True)
class Finding:
    tool: str
    rule: str
    severity: str
    file: str
    line: int = 0
    column: int = 0
    message: str = ""
    baselined: bool = False
    fingerprint: str = ""
    #: True when this finding is one the stage's gate failed on (not
    #: baselined, at a failing severity), as the kind decided.
    fails_gate: bool = False

    def relevance(self) -> tuple[bool, bool, int, str, int, int]:
        """Sort key by gate relevance: findings that fail the gate first,
        then those not baselined, then by severity (worst first, unknown
        ones last), file, line and column. ``sorted(findings,
        key=Finding.relevance)``."""
        return (
            not self.fails_gate,
            self.baselined,
            severity_rank(self.severity),
            self.file,
            self.line,
            self.column,
        )


@dataclass(frozen=True)
class TestCaseResult:
    name: str
    outcome: str  # failed, error, skipped, flaky
    message: str = ""
    file: str = ""
    duration_seconds: float = 0.0


@dataclass
class StageReport:
    kind: str
    counts: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    tests: list[TestCaseResult] = field(default_factory=list)
    truncated: int = 0
    gate_passed: bool = True
    gate_reason: str = ""
    sources: list[str] = field(default_factory=list)

    def capped(self) -> StageReport:
        """A copy as stored: findings by gate relevance (:meth:`Finding.relevance`)
        and tests failed and errored first, then flaky, then the others,
        skipped ones last (otherwise in the kind's order); at most
        :data:`MAX_ITEMS` of each, so what is left out, and counted in
        ``truncated``, is what matters least."""
        findings = sorted(self.findings, key=Finding.relevance)
        tests = sorted(self.tests, key=lambda t: _OUTCOME_RANK.get(t.outcome, 2))
        dropped = max(0, len(findings) - MAX_ITEMS) + max(0, len(tests) - MAX_ITEMS)
        return StageReport(
            kind=self.kind,
            counts=dict(self.counts),
            findings=findings[:MAX_ITEMS],
            tests=tests[:MAX_ITEMS],
            truncated=self.truncated + dropped,
            gate_passed=self.gate_passed,
            gate_reason=self.gate_reason,
            sources=list(self.sources),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StageReport:
        data: dict[str, Any] = json.loads(text)
        return cls(
            kind=data["kind"],
            counts={k: int(v) for k, v in data.get("counts", {}).items()},
            findings=[Finding(**f) for f in data.get("findings", [])],
            tests=[TestCaseResult(**t) for t in data.get("tests", [])],
            truncated=int(data.get("truncated", 0)),
            gate_passed=bool(data.get("gate_passed", True)),
            gate_reason=data.get("gate_reason", ""),
            sources=list(data.get("sources", [])),
        )
