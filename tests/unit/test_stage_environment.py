"""What stages get of the daemon's environment: never the daemon's own
virtual environment, unless ``stage_inherit_venv`` says so (issue 8)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conveyor.daemon.scheduler.runner import base_environment, daemon_venv, without_venv


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    root = tmp_path / "conveyor" / ".venv"
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    return root


def test_the_venvs_bin_leaves_path_and_the_rest_stays_in_order(venv: Path, tmp_path: Path) -> None:
    env = {
        "PATH": f"{venv}/bin:/usr/local/bin:{venv}/bin/:/usr/bin:{tmp_path}/conveyor/bin",
        "HOME": "/home/ci",
    }
    assert without_venv(env, str(venv)) == {
        "PATH": f"/usr/local/bin:/usr/bin:{tmp_path}/conveyor/bin",
        "HOME": "/home/ci",
    }


def test_a_path_through_a_symbolic_link_is_recognised(venv: Path, tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(venv)
    env = {"PATH": f"{link}/bin:/usr/bin", "VIRTUAL_ENV": str(link)}
    assert without_venv(env, str(venv)) == {"PATH": "/usr/bin"}
    # and the daemon's prefix written through the link
    assert without_venv({"PATH": f"{venv}/bin:/bin"}, str(link)) == {"PATH": "/bin"}


def test_python_variables_pointing_into_the_venv_are_dropped(venv: Path) -> None:
    env = {
        "VIRTUAL_ENV": str(venv),
        "VIRTUAL_ENV_PROMPT": "conveyor",
        "PYTHONHOME": str(venv),
        "PYTHONPATH": f"{venv}/lib:/opt/plugins",
    }
    assert without_venv(env, str(venv)) == {"PYTHONPATH": "/opt/plugins"}
    assert without_venv({"PYTHONPATH": f"{venv}/lib"}, str(venv)) == {}


def test_another_virtual_environment_is_left_alone(venv: Path, tmp_path: Path) -> None:
    other = tmp_path / "project" / ".venv"
    env = {
        "PATH": f"{other}/bin:/usr/bin",
        "VIRTUAL_ENV": str(other),
        "PYTHONHOME": "/opt/python",
        "PYTHONPATH": "",
    }
    assert without_venv(env, str(venv)) == env
    sibling = {"PATH": f"{venv}-old/bin"}  # a prefix of the name is not inside
    assert without_venv(sibling, str(venv)) == sibling


def test_base_environment_strips_the_daemons_venv_unless_asked_to_keep_it(
    monkeypatch: pytest.MonkeyPatch, venv: Path
) -> None:
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    monkeypatch.setenv("PATH", f"{venv}/bin:/usr/bin")
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    names = ["PATH", "VIRTUAL_ENV", "PYTHONPATH"]
    assert daemon_venv() == str(venv)
    assert base_environment(names) == {"PATH": "/usr/bin"}
    assert base_environment(names, inherit_venv=True) == {
        "PATH": f"{venv}/bin:/usr/bin",
        "VIRTUAL_ENV": str(venv),
    }
    assert base_environment(["HOME"]) == {"HOME": os.environ["HOME"]}


def test_a_daemon_outside_a_virtual_environment_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)
    monkeypatch.setenv("PATH", f"{sys.base_prefix}/bin:/usr/bin")
    assert daemon_venv() is None
    assert base_environment(["PATH"]) == {"PATH": f"{sys.base_prefix}/bin:/usr/bin"}
