"""The committed gRPC code matches what proto/ generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_grpc_code_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_client_distribution_does_not_need_the_daemon_stack() -> None:
    """A service that only talks to the daemon installs the client alone."""
    code = (
        "import sys, conveyor.client.cli, conveyor.client.connection, conveyor.client.timeline\n"
        "bad = [m for m in ('trio', 'docker', 'opentelemetry.sdk', 'pydantic', 'yaml',"
        " 'conveyor.daemon') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    pyproject = (ROOT / "clients" / "pyproject.toml").read_text()
    for forbidden in ("trio", "docker", "opentelemetry", "conveyor-daemon"):
        assert forbidden not in pyproject
