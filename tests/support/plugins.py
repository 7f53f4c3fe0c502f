"""Plugins for tests: installed for real into a folder a daemon imports from.

A daemon started with ``PYTHONPATH=<folder>`` sees the distributions
installed there (their entry points included), without touching the shared
virtual environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def uv_command() -> list[str]:
    """How to call uv: the one ``uv run`` names in ``$UV``, else the
    repository's ``scripts/uv.sh`` (which finds it as the bootstrap does).

    The workspace ``.venv`` is made by uv and has no pip, so nothing here
    falls back to ``python -m pip``.
    """
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv:
        return [uv]
    return ["bash", str(ROOT / "scripts" / "uv.sh")]


def install(project: Path, target: Path) -> None:
    """Install a project folder into ``target`` (``uv pip install --target``)."""
    cmd = [
        *uv_command(),
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--python",
        sys.executable,
        "--target",
        str(target),
        str(project),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")


def write_distribution(
    target: Path, name: str, entry_points: dict[str, str], modules: dict[str, str]
) -> None:
    """Lay out an installed distribution by hand: its modules and a dist-info
    holding METADATA and the ``conveyor`` entry points."""
    target.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (target / f"{module}.py").write_text(textwrap.dedent(source))
    dist_info = target / f"{name.replace('-', '_')}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{ep} = {value}\n" for ep, value in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[conveyor]\n{lines}")
