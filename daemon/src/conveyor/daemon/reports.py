"""Parsed results of lint, test and scan stages, as stored and served.

Stage kinds build a :class:`StageReport` and return it in their
:class:`~conveyor.daemon.stages.StageOutcome`; the daemon stores it with the
stage and serves it in ``Run.stages[].report``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: Findings or tests kept per report; the rest are only counted.
MAX_ITEMS = 1000


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
        """A copy with at most :data:`MAX_ITEMS` findings and tests."""
        dropped = max(0, len(self.findings) - MAX_ITEMS) + max(0, len(self.tests) - MAX_ITEMS)
        return StageReport(
            kind=self.kind,
            counts=dict(self.counts),
            findings=self.findings[:MAX_ITEMS],
            tests=self.tests[:MAX_ITEMS],
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
