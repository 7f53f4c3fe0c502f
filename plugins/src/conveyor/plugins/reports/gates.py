"""Counting findings and deciding gates: whether a lint, scan or test stage
passes, with a reason a user can act on, and which findings it fails on.

A failing gate's reason names the rules it failed on and its first finding
in gate order (``; first: src/app/auth.py:12 B105``): the order of
:meth:`Finding.relevance <conveyor.plugin.Finding.relevance>`, which the
daemon stores and ``conveyor show`` lists findings in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Literal, get_args

from conveyor.plugin import Finding

if TYPE_CHECKING:
    from conveyor.plugins.reports.junit import JUnitResult

#: A lint level (SARIF's levels; ruff reports ``error``).
LintLevel = Literal["note", "warning", "error"]
#: Lint levels, least severe first.
LINT_LEVELS: tuple[LintLevel, ...] = get_args(LintLevel)
#: A scan severity.
ScanSeverity = Literal["low", "medium", "high", "critical"]
#: Scan severities, least severe first.
SCAN_SEVERITIES: tuple[ScanSeverity, ...] = get_args(ScanSeverity)

# Severities other tools use, as scan severities. Anything else counts as
# critical: an unknown severity fails closed.
_SCAN_ALIASES = {
    "none": "low",
    "note": "low",
    "info": "low",
    "informational": "low",
    "warning": "medium",
    "moderate": "medium",
    "error": "high",
}
#: Rules listed in a gate's reason; the rest are counted.
MAX_RULES_IN_REASON = 8
#: Test names listed in a gate's reason.
MAX_TESTS_IN_REASON = 5


def _plural(count: int, noun: str, plural: str = "") -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def _severity_order(severity: str) -> tuple[int, str]:
    known = (*LINT_LEVELS, *SCAN_SEVERITIES)
    return (known.index(severity), "") if severity in known else (len(known), severity)


def finding_counts(findings: Sequence[Finding]) -> dict[str, int]:
    """``{"total": n, "baselined": k, <severity>: m, ...}``: the severities
    count only findings that are not baselined."""
    by_severity = Counter(f.severity for f in findings if not f.baselined)
    counts = {"total": len(findings), "baselined": sum(1 for f in findings if f.baselined)}
    for severity in sorted(by_severity, key=_severity_order):
        if severity not in counts:
            counts[severity] = by_severity[severity]
    return counts


def rule_summary(findings: Iterable[Finding]) -> str:
    """``"F401 x2, E501"``: rules by number of findings, most first."""
    counts = Counter(f.rule or "?" for f in findings)
    ranked = counts.most_common()  # ties keep first-seen order
    parts = [rule if n == 1 else f"{rule} x{n}" for rule, n in ranked[:MAX_RULES_IN_REASON]]
    if len(ranked) > MAX_RULES_IN_REASON:
        parts.append(f"and {_plural(len(ranked) - MAX_RULES_IN_REASON, 'more rule')}")
    return ", ".join(parts)


def _baselined_note(findings: Sequence[Finding]) -> str:
    baselined = sum(1 for f in findings if f.baselined)
    return f"; {baselined} baselined" if baselined else ""


def _first_failing(blocking: Iterable[Finding]) -> str:
    """``"; first: src/app/auth.py:12 B105"``: where the first of the findings
    a gate fails on is, in gate order; "" when there is none."""
    # all of them fail the gate, whether or not they are marked yet
    first = min(_marked(blocking, lambda f: True), key=Finding.relevance, default=None)
    if first is None:
        return ""
    where = first.file or "-"
    if first.line:
        where += f":{first.line}"
    return f"; first: {where} {first.rule or first.tool}"


def _failure_reason(
    blocking: Sequence[Finding], threshold: str, findings: Sequence[Finding]
) -> str:
    return (
        f"{_plural(len(blocking), 'finding')} {threshold} ({rule_summary(blocking)})"
        f"{_first_failing(blocking)}{_baselined_note(findings)}"
    )


def _lint_levels(fail_on: Collection[str]) -> set[str]:
    wanted = {fail_on} if isinstance(fail_on, str) else set(fail_on)
    unknown = sorted(wanted - set(LINT_LEVELS))
    if unknown:
        raise ValueError(
            f"unknown lint level {unknown[0]!r} in fail_on; expected: {', '.join(LINT_LEVELS)}"
        )
    return wanted


def _lint_fails(fail_on: Collection[str]) -> Callable[[Finding], bool]:
    wanted = _lint_levels(fail_on)
    return lambda f: not f.baselined and f.severity in wanted


def _scan_fails(fail_on: str) -> Callable[[Finding], bool]:
    if fail_on not in SCAN_SEVERITIES:
        raise ValueError(
            f"unknown severity {fail_on!r} for fail_on; expected one of: "
            f"{', '.join(SCAN_SEVERITIES)}"
        )
    threshold = SCAN_SEVERITIES.index(fail_on)
    return lambda f: not f.baselined and scan_rank(f.severity) >= threshold


def _marked(findings: Iterable[Finding], fails: Callable[[Finding], bool]) -> list[Finding]:
    return [replace(f, fails_gate=fails(f)) for f in findings]


def mark_lint_gate(findings: Iterable[Finding], fail_on: Collection[str]) -> list[Finding]:
    """The findings with ``fails_gate`` set on those :func:`lint_gate` fails
    on (not baselined, a level in ``fail_on``) and cleared on the others."""
    return _marked(findings, _lint_fails(fail_on))


def mark_scan_gate(findings: Iterable[Finding], fail_on: str) -> list[Finding]:
    """The findings with ``fails_gate`` set on those :func:`scan_gate` fails
    on (not baselined, severity at or above ``fail_on``) and cleared on the
    others."""
    return _marked(findings, _scan_fails(fail_on))


def lint_gate(findings: Sequence[Finding], fail_on: Collection[str]) -> tuple[bool, str]:
    """Fails when a finding that is not baselined has a level in ``fail_on``.

    >>> lint_gate(findings, {"error", "warning"})
    (False, '3 findings at levels error, warning (F401 x2, E501); first: src/a.py:1 F401')
    """
    wanted = _lint_levels(fail_on)
    levels = ", ".join(level for level in reversed(LINT_LEVELS) if level in wanted)
    active = [f for f in findings if not f.baselined]
    if not wanted:
        return True, (
            f"not gated (fail_on lists no levels): {_plural(len(active), 'finding')}"
            f"{_baselined_note(findings)}"
        )
    fails = _lint_fails(wanted)
    blocking = [f for f in findings if fails(f)]
    if blocking:
        return False, _failure_reason(blocking, f"at levels {levels}", findings)
    others = Counter(f.severity for f in active)
    other_note = ", ".join(
        f"{n} at {level}"
        for level, n in sorted(others.items(), key=lambda i: _severity_order(i[0]))
    )
    return True, (
        f"no findings at levels {levels}"
        f"{'; ' + other_note if other_note else ''}{_baselined_note(findings)}"
    )


def scan_rank(severity: str) -> int:
    """The index of a severity in :data:`SCAN_SEVERITIES` (lint levels and
    common aliases are mapped; an unknown severity ranks as critical)."""
    severity = severity.lower()
    severity = _SCAN_ALIASES.get(severity, severity)
    if severity in SCAN_SEVERITIES:
        return SCAN_SEVERITIES.index(severity)
    return len(SCAN_SEVERITIES) - 1


def scan_gate(findings: Sequence[Finding], fail_on: str) -> tuple[bool, str]:
    """Fails when a finding that is not baselined has a severity at or above
    ``fail_on``.

    >>> scan_gate(findings, "high")
    (False, '2 findings at or above high (B602, AWS Access Key); first: app.py:3 B602; 1 baselined')
    """
    fails = _scan_fails(fail_on)
    active = [f for f in findings if not f.baselined]
    blocking = [f for f in active if fails(f)]
    if blocking:
        return False, _failure_reason(blocking, f"at or above {fail_on}", findings)
    below = len(active)
    below_note = f"; {below} below {fail_on}" if below else ""
    return True, f"no findings at or above {fail_on}{below_note}{_baselined_note(findings)}"


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_TESTS_IN_REASON])
    if len(names) > MAX_TESTS_IN_REASON:
        shown += f" and {len(names) - MAX_TESTS_IN_REASON} more"
    return shown


def test_gate(
    result: JUnitResult, flaky: Collection[str], *, allow_flaky: bool
) -> tuple[bool, str]:
    """Fails when tests failed or errored (flaky ones aside), or when there
    are flaky tests (failed, then passed on rerun) and they are not allowed.

    ``result`` is the first run; ``flaky`` comes from :func:`flaky_tests`.

    >>> test_gate(result, [], allow_flaky=False)
    (False, '2 failed, 1 error of 10 tests (tests.test_a.test_x, ...)')
    """
    flaky_names = list(dict.fromkeys([flaky] if isinstance(flaky, str) else flaky))
    flaky_set = set(flaky_names)
    failing = [
        c for c in result.cases if c.outcome in ("failed", "error") and c.name not in flaky_set
    ]
    failed = sum(1 for c in failing if c.outcome == "failed")
    errors = len(failing) - failed
    flaky_note = f"{len(flaky_names)} flaky: {_names(flaky_names)}" if flaky_names else ""
    of_total = f"of {_plural(result.total, 'test')}"
    if failing:
        counts = ", ".join(
            part
            for part in (
                f"{failed} failed" if failed else "",
                _plural(errors, "error") if errors else "",
            )
            if part
        )
        names = list(dict.fromkeys(c.name for c in failing))
        reason = f"{counts} {of_total} ({_names(names)})"
        return False, f"{reason}; {flaky_note}" if flaky_note else reason
    if flaky_names and not allow_flaky:
        return False, (
            f"{_plural(len(flaky_names), 'flaky test')} {of_total} failed, then passed on rerun "
            f"({_names(flaky_names)}); flaky tests are not allowed"
        )
    if result.total == 0:
        # like Jenkins' junit step: an empty report usually means the tests
        # were not found, not that there is nothing to test
        return False, "no tests ran (the reports hold no test cases)"
    ran = result.total - result.skipped
    if result.skipped:
        reason = f"{ran} {of_total} passed, {result.skipped} skipped"
    elif result.total == 1:
        reason = "the only test passed"
    else:
        reason = f"all {result.total} tests passed"
    return True, f"{reason} ({flaky_note})" if flaky_note else reason


# not a test, whatever pytest thinks of the name when a test module imports it
test_gate.__test__ = False  # type: ignore[attr-defined]
