"""The floor that ``python -m bench floor`` measures does the work it
claims to do (``bench/floor_daemon.py``): runs and their stages stored,
stages in the order of their needs, each seeing its need stored, logs
kept, workspaces removed, a followed log whole."""

from __future__ import annotations

import shlex
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import concurrent
from bench.floor import FloorProcess, running_floor


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[FloorProcess]:
    with running_floor(tmp_path / "floor") as running:
        yield running


def _rows(folder: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(folder / "floor.db") as conn:
        return list(conn.execute(query))


def test_a_chain_runs_in_order_each_stage_seeing_its_need_stored(
    floor: FloorProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "floor"
    seen = tmp_path / "seen"
    # Each stage reads, from the database, what its need was stored as.
    read = (
        "import sqlite3, sys; "
        f"c = sqlite3.connect({str(folder / 'floor.db')!r}); "
        "print(sys.argv[1], *c.execute("
        "'SELECT status FROM stages WHERE run = 1 AND name = ?', (sys.argv[2],)).fetchone())"
    )

    def stage(name: str, need: str) -> str:
        return f"{shlex.quote(sys.executable)} -c {shlex.quote(read)} {name} {need} >> {seen}"

    floor.run(
        {
            "a": {"run": f"echo a >> {seen}"},
            "b": {"run": stage("b", "a"), "needs": ["a"]},
            "c": {"run": stage("c", "b"), "needs": ["b"]},
        }
    )

    assert seen.read_text().splitlines() == ["a", "b succeeded", "c succeeded"]
    assert _rows(folder, "SELECT status FROM runs") == [("succeeded",)]
    assert _rows(folder, "SELECT stage, status FROM events WHERE stage IS NOT NULL") == [
        ("a", "succeeded"),
        ("b", "succeeded"),
        ("c", "succeeded"),
    ]
    assert not (folder / "run-1").exists()  # the workspace went with the run
    assert (folder / "logs" / "1-a").exists()  # the logs stay


def test_runs_submitted_at_once_all_end_stored(floor: FloorProcess, tmp_path: Path) -> None:
    floor.burst(concurrent.DIAMOND, 12)

    rows = _rows(tmp_path / "floor", "SELECT status, COUNT(*) FROM stages GROUP BY status")
    assert rows == [("succeeded", 12 * len(concurrent.DIAMOND))]


def test_a_followed_log_arrives_whole_in_order(floor: FloorProcess) -> None:
    size = 3 * (1 << 20) + 17  # more than a read takes at once

    received = floor.follow(f"head -c {size} /dev/zero | tr '\\0' x")

    assert received.total == size
    assert received.gaps == 0


def test_a_call_reaches_the_loop(floor: FloorProcess) -> None:
    assert 0 < floor.to_loop() < 10
