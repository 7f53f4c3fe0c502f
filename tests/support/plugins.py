"""Plugins for tests: installed for real into a folder a daemon imports from.

A daemon started with ``PYTHONPATH=<folder>`` sees the distributions
installed there (their entry points included), without touching the shared
virtual environment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path


def install(project: Path, target: Path) -> None:
    """``pip install --target`` a project folder (with uv when available)."""
    uv = shutil.which("uv")
    if uv:
        cmd = [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(project)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    else:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(target),
                str(project),
            ],
            check=True,
        )


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
