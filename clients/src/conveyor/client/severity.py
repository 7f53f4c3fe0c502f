"""Severities of findings, worst first: for ordering what `conveyor show`
lists and for `--severity` / `--min-severity` thresholds.

Scans use ``critical > high > medium > low``, lint ``error > warning >
note``. The two scales line up as the scan kind maps lint levels (``error``
is ``high``, ``warning`` is ``medium``, ``note`` is ``low``), so either
name works as a threshold for either kind of stage.
"""

from __future__ import annotations

#: Every severity name a threshold may use, worst first.
SEVERITIES = ("critical", "high", "medium", "low", "error", "warning", "note")

_RANK = {
    "critical": 0,
    "high": 1,
    "error": 1,
    "medium": 2,
    "warning": 2,
    "low": 3,
    "note": 3,
}
#: The rank of a severity no built-in kind uses (a plugin's own): after the others.
UNKNOWN_RANK = len(SEVERITIES)


def rank(severity: str) -> int:
    """0 for the worst (``critical``), higher for milder ones; unknown
    severities rank after every known one."""
    return _RANK.get(severity.lower(), UNKNOWN_RANK)


def at_least(severity: str, threshold: str | None) -> bool:
    """Whether a finding of ``severity`` is at or above ``threshold`` (None:
    every finding is). A severity Conveyor does not know is never left out:
    the scan gate, too, counts it as critical."""
    if threshold is None:
        return True
    value = rank(severity)
    return value == UNKNOWN_RANK or value <= rank(threshold)


def check(threshold: str) -> str:
    """``threshold``, lower-cased, or ValueError naming the valid ones."""
    value = threshold.lower()
    if value not in _RANK:
        raise ValueError(
            f"unknown severity {threshold!r}; expected one of: {', '.join(SEVERITIES)}"
        )
    return value
