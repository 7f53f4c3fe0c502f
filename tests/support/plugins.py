"""Plugins for tests: installed for real into a folder a daemon imports from,
and what the daemon hands plugins, for in-process tests.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.daemon.executors.base import LogOutput
from conveyor.daemon.executors.local import LocalExecutor
from conveyor.daemon.logstore import StageLog
from conveyor.daemon.records import RunRecord, RunStatus, StageRecord, TriggerKind
from conveyor.daemon.views import run_view
from conveyor.plugin import StageContext, StageSpec

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


def run_record(*stages: str, run_id: str = "0123456789abcdef") -> RunRecord:
    """A running run with pending stages, as the scheduler holds it."""
    return RunRecord(
        id=run_id,
        number=1,
        pipeline="p",
        repository="/srv/repo",
        ref="main",
        commit="c" * 40,
        pipeline_path="conveyor.yaml",
        trigger=TriggerKind.MANUAL,
        status=RunStatus.RUNNING,
        created_at=1.0,
        spec_json="{}",
        concurrency_group="",
        stages=[
            StageRecord(run_id=run_id, name=name, position=i, kind="run", needs=[])
            for i, name in enumerate(stages)
        ],
    )


def stage_context(
    stage: Mapping[str, Any], workspace: Path, home: Path, *, name: str = "s"
) -> tuple[StageContext, StageLog]:
    """What the daemon gives one attempt of a stage (written as in a pipeline
    file), for running a stage kind in-process: the ``local`` executor, a
    real stage log under ``home``, the reports folder beside it. Call it
    inside a trio run."""
    log = StageLog(home / "logs" / f"{name}.log")
    context = StageContext(
        run=run_view(run_record(name)),
        name=name,
        spec=StageSpec.model_validate(stage),
        attempt=1,
        workspace=workspace,
        env=dict(os.environ),
        executor=LocalExecutor(),
        log=LogOutput(log),
        kill_grace=1.0,
        reports_dir=home / "reports" / name,
    )
    return context, log
