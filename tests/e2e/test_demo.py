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


@pytest.mark.slow
def test_the_demo_runs_every_stage_and_succeeds() -> None:
    stages = list(yaml.safe_load(PIPELINE.read_text())["stages"])
    assert stages, "the demo pipeline has stages"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    result = subprocess.run(
        [sys.executable, str(DEMO)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "demo succeeded" in result.stdout
    assert "conveyord exited with 0" in result.stdout
    # the closing summary of `conveyor submit --watch`: one line per stage
    for name in stages:
        assert re.search(rf"^  {re.escape(name)} +succeeded ", result.stdout, re.M), name
