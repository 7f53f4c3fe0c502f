"""Spare workspaces: skeletons made ahead of time, taken by checkouts,
made again at runs' ends, and started afresh at start-up."""

from __future__ import annotations

import shutil
from pathlib import Path

from conveyor.daemon.spare_workspaces import EMPTY_PACKED_REFS, SpareWorkspaces


def test_a_spare_is_taken_once_and_made_again(tmp_path: Path) -> None:
    spares = SpareWorkspaces(tmp_path / ".spare", keep=2)
    (tmp_path / ".spare" / "half-made").mkdir(parents=True)
    spares.reset()
    assert spares.ready == 2
    assert not (tmp_path / ".spare" / "half-made").exists(), "start-up removes leftovers"

    first, second, third = (tmp_path / name for name in ("r1", "r2", "r3"))
    assert spares.take(first) and spares.take(second)
    assert not spares.take(third), "none left: the checkout makes its own"
    assert not third.exists()
    git_dir = first / ".git"
    assert (git_dir / "objects" / "info").is_dir() and (git_dir / "refs").is_dir()
    assert (git_dir / "packed-refs").read_text() == EMPTY_PACKED_REFS
    assert sorted(p.name for p in (tmp_path / ".spare").iterdir()) == []

    spares.refill()
    assert spares.ready == 2
    spares.refill()
    assert spares.ready == 2, "no more than keep"


def test_a_spare_removed_behind_its_back_is_passed_over(tmp_path: Path) -> None:
    spares = SpareWorkspaces(tmp_path / ".spare", keep=2)
    spares.reset()
    shutil.rmtree(tmp_path / ".spare" / "1")  # the one taken first
    assert spares.take(tmp_path / "run")
    assert (tmp_path / "run" / ".git" / "HEAD").exists()
