"""Tests for duration parsing."""

from __future__ import annotations

import pytest

from conveyor.daemon.pipeline import parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("45", 45.0),
        ("2.5", 2.5),
        (" 10 ", 10.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2h 5m 10s", 7510.0),
        ("1m500ms", 60.5),
        (".5s", 0.5),
    ],
)
def test_valid_durations(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["5x", "", "  ", "m", "1.5.5s", "5 minutes", "1d", "5M", "nan"])
def test_invalid_duration_strings(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == (
        f"invalid duration {value!r}: expected a number of seconds or e.g. 30s, 5m, 1h30m"
    )


def test_exact_message_for_bad_unit() -> None:
    with pytest.raises(ValueError, match=r"^invalid duration '5x': expected a number of seconds"):
        parse_duration("5x")


@pytest.mark.parametrize("value", [-1, -0.5, "-5s", "-3"])
def test_negative_durations_are_rejected(value: str | int | float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_bools_are_rejected(value: bool) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_numbers_are_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_duration(value)


def test_other_types_are_rejected() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration([5])  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [10**400, "1" * 400, "99999999999999h", 2592001, "721h"])
def test_durations_beyond_30_days_or_a_float_are_rejected(value: str | int) -> None:
    with pytest.raises(ValueError, match=r"longer than the limit of 30 days \(2592000 seconds\)$"):
        parse_duration(value)


def test_30_days_is_accepted() -> None:
    assert parse_duration("720h") == 2592000.0


def test_a_long_invalid_value_is_cut_in_the_message() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("x" * 10_000)
    assert len(str(info.value)) < 200
