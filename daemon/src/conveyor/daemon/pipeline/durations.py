"""Parsing of human-friendly durations such as ``30s``, ``5m`` or ``1h30m``."""

from __future__ import annotations

import math
import re
from typing import Any, Final

__all__ = ["DURATION_HINT", "DURATION_PATTERN", "MAX_DURATION", "parse_duration"]

_NUMBER: Final = r"(?:\d+(?:\.\d+)?|\.\d+)"
_UNIT: Final = r"(?:ms|h|m|s)"

#: Pattern accepted for string durations (also used in the JSON Schema).
DURATION_PATTERN: Final = rf"^\s*(?:{_NUMBER}|(?:{_NUMBER}\s*{_UNIT}\s*)+)\s*$"

#: Human-readable description of what a duration may look like.
DURATION_HINT: Final = "expected a number of seconds or e.g. 30s, 5m, 1h30m"

#: Longest duration accepted, in seconds (30 days): a timeout or delay beyond
#: that is a mistake, and huge numbers break timers and arithmetic.
MAX_DURATION: Final = 30 * 24 * 3600.0

_FULL_RE: Final = re.compile(DURATION_PATTERN)
_PART_RE: Final = re.compile(rf"({_NUMBER})\s*({_UNIT})")
_SECONDS_PER_UNIT: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _shown(value: Any) -> str:
    """``value`` for a message: its repr, cut after 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


def _invalid(value: Any, why: str = DURATION_HINT) -> ValueError:
    return ValueError(f"invalid duration {_shown(value)}: {why}")


def parse_duration(value: str | int | float) -> float:
    """Return ``value`` as a number of seconds.

    Numbers (and numeric strings) are seconds; strings may combine the units
    ``h``, ``m``, ``s`` and ``ms``, e.g. ``"500ms"``, ``"1.5s"``, ``"2h 5m 10s"``.
    Raises ``ValueError`` for anything else, negative or non-finite values,
    and values over :data:`MAX_DURATION`.
    """
    if isinstance(value, bool):
        raise _invalid(value)
    if isinstance(value, int) and value > MAX_DURATION:
        raise _too_long(value)  # float() of a huge int overflows
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise _invalid(value, "must not be negative")
        if not text or _FULL_RE.fullmatch(text) is None:
            raise _invalid(value)
        parts = _PART_RE.findall(text)
        if not parts:
            seconds = float(text)
        else:
            seconds = sum(float(number) * _SECONDS_PER_UNIT[unit] for number, unit in parts)
    else:
        raise _invalid(value)
    if not math.isfinite(seconds):
        if isinstance(value, str):
            raise _too_long(value)  # digits too many for a float
        raise _invalid(value, "must be a finite number")
    if seconds < 0:
        raise _invalid(value, "must not be negative")
    if seconds > MAX_DURATION:
        raise _too_long(value)
    return seconds


def _too_long(value: Any) -> ValueError:
    return _invalid(value, f"longer than the limit of 30 days ({MAX_DURATION:.0f} seconds)")
