"""A real ``conveyord`` that cannot start says why: configuration mistakes
exit 2 naming each bad value, a crash exits 1 with its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def conveyord(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor.daemon.main", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
    )


def test_bad_values_from_file_environment_and_flags_exit_2_each_named(tmp_path: Path) -> None:
    (tmp_path / "conveyord.toml").write_text("max_concurrent_runs = 2.9\n")
    result = conveyord(
        tmp_path,
        "--kill-grace",
        "soon",
        env={"CONVEYOR_KEEP_WORKSPACES": "ture"},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert (
        "conveyord: configuration error: max_concurrent_runs: invalid value 2.9 in"
        f" {tmp_path / 'conveyord.toml'}; expected an integer of at least 1"
    ) in lines
    assert (
        "conveyord: configuration error: keep_workspaces: invalid value 'ture' from environment"
        " variable CONVEYOR_KEEP_WORKSPACES; expected true or false (or 1/0, yes/no, on/off)"
    ) in lines
    assert (
        "conveyord: configuration error: kill_grace: invalid value 'soon' from flag"
        " --kill-grace; expected a finite number of at least 0"
    ) in lines


def test_a_crash_at_start_up_logs_its_traceback_at_error_level(tmp_path: Path) -> None:
    (tmp_path / "conveyor.db").mkdir()  # the database file is a folder: SQLite cannot open it
    result = conveyord(tmp_path, "--log-level", "error")
    assert result.returncode == 1
    assert "ERROR conveyord: conveyord crashed" in result.stderr
    assert "Traceback (most recent call last):" in result.stderr
    assert "sqlite3.OperationalError: unable to open database file" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "conveyord: OperationalError: unable to open database file"
    )
