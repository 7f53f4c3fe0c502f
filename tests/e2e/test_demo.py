"""`make demo`: the example service's pipeline through a throwaway daemon and the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.py"
PIPELINE = ROOT / "examples" / "demo-service" / "conveyor.yaml"


DOCKER_PIPELINE = ROOT / "examples" / "demo-service" / "conveyor.docker.yaml"


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        [sys.executable, str(DEMO), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def check_demo(result: subprocess.CompletedProcess[str], pipeline: Path) -> None:
    stages = list(yaml.safe_load(pipeline.read_text())["stages"])
    assert stages, "the demo pipeline has stages"
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "demo succeeded" in result.stdout
    assert "conveyord exited with 0" in result.stdout
    # the dashboard: a sign-in link, and each submitted run's page
    assert re.search(r"^http://127\.0\.0\.1:\d+/login/\S+$", result.stdout, re.M), output
    assert re.search(r"^  http://127\.0\.0\.1:\d+/runs/[0-9a-f]+$", result.stdout, re.M)
    # the closing summary of `conveyor submit --watch`: one line per stage
    for name in stages:
        assert re.search(rf"^  {re.escape(name)} +succeeded ", result.stdout, re.M), name
    # the artifact: listed, its provenance verified, traced; the re-run reuses it
    assert re.search(r"^verified sha256:[0-9a-f]{64} ", result.stdout, re.M), output
    assert "reproducible from the commit: yes" in result.stdout
    assert re.search(r"succeeded \(attempt 1\) in [0-9.]+s: cache hit: sha256:", result.stdout)


@pytest.mark.slow
def test_the_demo_without_docker_builds_a_file_artifact_once() -> None:
    result = run_demo("--no-docker")
    check_demo(result, PIPELINE)
    assert "greeter.tar.gz" in result.stdout


@pytest.mark.slow
@pytest.mark.docker
def test_the_demo_with_docker_builds_and_pushes_an_image_once(docker_engine: object) -> None:
    result = run_demo()
    check_demo(result, DOCKER_PIPELINE)
    assert "127.0.0.1:5000/demo/greeter" in result.stdout
    assert re.search(r"push +succeeded", result.stdout)
