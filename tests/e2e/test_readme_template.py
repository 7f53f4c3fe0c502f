"""README.md's "Use it on your repository" pipeline, exactly as printed, on a
project shaped like a real one (:mod:`tests.support.realproject`, after its
first-hour clean-up), with the daemon set up as the README says: this
repository's ``.venv/bin`` first on ``PATH``.

The run must succeed without touching the machine's Python: the project and
pytest go into a virtual environment the stage makes in the workspace.
Installing them needs PyPI (the template installs pytest and the project's
small build backend, flit-core).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.realproject import TEST_COUNT, first_hour_fixes, make_realproject
from tests.support.repos import git

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "Use it on your repository"
VENV_BIN = sysconfig.get_path("scripts")


def fenced_blocks(markdown: str, section: str) -> list[tuple[str, str]]:
    """``(info string, text)`` of each fenced code block under the ``##``
    heading ``section`` (up to the next heading of that level or above)."""
    blocks: list[tuple[str, str]] = []
    inside = False
    fence: tuple[str, str, list[str]] | None = None  # marker, info, lines
    for line in markdown.splitlines(keepends=True):
        if fence is not None:
            marker, info, lines = fence
            if line.strip() == marker:
                if inside:
                    blocks.append((info, "".join(lines)))
                fence = None
            else:
                lines.append(line)
            continue
        opening = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", line)
        if opening:
            fence = (opening.group(1), opening.group(2), [])
            continue
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*$", line)
        if heading and len(heading.group(1)) <= 2:
            inside = heading.group(2) == section
    return blocks


def readme_pipeline() -> str:
    """The one YAML block of the README's section, as printed."""
    yaml_blocks = [
        text for info, text in fenced_blocks(README.read_text(), SECTION) if info == "yaml"
    ]
    assert len(yaml_blocks) == 1, f"expected one yaml block under '## {SECTION}'"
    return yaml_blocks[0]


def readme_path() -> str:
    """PATH as the README's advice makes it: ``.venv/bin`` first."""
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != VENV_BIN]
    return os.pathsep.join([VENV_BIN, *rest])


def host_pythons() -> list[str]:
    """The machine's Python interpreters a stage could reach: ``python3`` on
    PATH without Conveyor's environment, and the system's."""
    path = os.pathsep.join(p for p in readme_path().split(os.pathsep) if p != VENV_BIN)
    found = [shutil.which("python3", path=path), "/usr/bin/python3"]
    return list(dict.fromkeys(p for p in found if p and os.access(p, os.X_OK)))


def python_state(python: str) -> tuple[str, str]:
    """What a stage could change in an interpreter: its installed
    distributions, and whether the project is importable from it."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    listing = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    spec = subprocess.run(
        [python, "-c", "import importlib.util; print(importlib.util.find_spec('bookshelf'))"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return listing.stdout, spec.stdout.strip()


@pytest.fixture
def conveyord() -> Iterator[DaemonProcess]:
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))  # short: a unix socket lives there
    env = {"PATH": readme_path(), "CONVEYOR_KEEP_WORKSPACES": "true"}
    proc = DaemonProcess(home, env=env).start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_the_readme_section_has_the_pipeline_block() -> None:
    pipeline = yaml.safe_load(readme_pipeline())
    assert list(pipeline["stages"]) == ["lint", "test", "scan", "build"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_readme_pipeline_runs_verbatim_on_a_real_project_and_leaves_the_host_alone(
    conveyord: DaemonProcess, tmp_path: Path
) -> None:
    repo = make_realproject(tmp_path / "bookshelf")
    first_hour_fixes(repo)
    text = readme_pipeline()
    repo.commit({"conveyor.yaml": text}, "add the README's pipeline")
    assert (repo.path / "conveyor.yaml").read_text() == text
    pythons = host_pythons()
    assert pythons, "a python3 for the stages"
    before = {python: python_state(python) for python in pythons}
    assert all(spec == "None" for _, spec in before.values())

    env = {**os.environ, "PATH": readme_path(), "CONVEYOR_ADDRESS": conveyord.address}
    env.pop("CONVEYOR_HOME", None)
    conveyor = [os.path.join(VENV_BIN, "conveyor")]
    validate = subprocess.run(
        [*conveyor, "validate"], cwd=repo.path, env=env, capture_output=True, text=True
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    submit = subprocess.run(
        [*conveyor, "submit", "--watch"],
        cwd=repo.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    output = submit.stdout + submit.stderr
    run_id = re.search(r"^run (\w+) ", submit.stdout, re.M)
    assert run_id, output
    run = conveyord.stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id.group(1)), timeout=10)
    logs = {s.name: conveyord.logs(run.id, s.name).decode(errors="replace") for s in run.stages}
    assert submit.returncode == 0, output + "\n".join(f"--- {n}\n{t}" for n, t in logs.items())
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED

    for name in ("lint", "test", "scan", "build"):
        assert stage(run, name).status == runs_pb2.STAGE_STATUS_SUCCEEDED, name
    tests = stage(run, "test").report
    assert (tests.counts["total"], tests.counts["passed"]) == (TEST_COUNT, TEST_COUNT)
    workspace = conveyord.home / "workspaces" / run.id
    assert [p.name for p in (workspace / "dist").iterdir()] == ["bookshelf-0.4.1-py3-none-any.whl"]
    assert git("status", "--porcelain", "--untracked-files=no", cwd=workspace) == ""

    after = {python: python_state(python) for python in pythons}
    assert after == before, "the machine's Python is unchanged"
