"""Checks of the admin console (bandit B101: assert)."""


def check_totals() -> None:
    assert sum([1, 2]) == 3
