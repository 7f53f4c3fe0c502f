"""`conveyor validate` against a real daemon says where a YAML mistake is, in
the user's terms."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.daemon import DaemonProcess

BROKEN = """\
name: shop
stages:
  lint:
    uses: lint
    with:
      tools: [ruff]
scan:
    uses: scan
    with:
      fail_on: high
  test:
    uses: test
    run: python -m pytest --junitxml="$CONVEYOR_REPORTS_DIR/junit.xml"
"""


def test_validate_points_at_the_stage_moved_out_of_stages(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    pipeline = tmp_path / "conveyor.yaml"
    pipeline.write_text(BROKEN)
    env = {**os.environ, "CONVEYOR_ADDRESS": daemon.address}
    env.pop("CONVEYOR_HOME", None)
    result = subprocess.run(
        [sys.executable, "-m", "conveyor.client.cli", "validate", str(pipeline)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout == (
        f"{pipeline}:7:1: invalid YAML: 'scan' is at the top level; is it a stage indented"
        " less than the others under 'stages:' (column 3)?\n"
    )
