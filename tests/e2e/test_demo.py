"""`make demo`: the example service's pipeline through a throwaway daemon and
the CLI, then the same artifact delivered to staging and promoted to
production with other configuration; everything it started is gone after."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import docker
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


def check_delivery(result: subprocess.CompletedProcess[str], target: str) -> None:
    """Deployed to staging, the same digest promoted to production; each
    answers the same version with its own greeting; then all of it stopped."""
    out = result.stdout
    built = re.search(r"^verified (sha256:[0-9a-f]{64}) ", out, re.M)
    assert built is not None
    digest = built.group(1)
    assert f"delivering {digest[:19]} on the {target} target" in out
    assert re.search(r"^deployment \w+ to staging: healthy in ", out, re.M), out
    assert re.search(
        rf"^promotion from staging \w+: .* \({re.escape(digest[:19])}\) to production", out, re.M
    )
    assert re.search(r"^deployment \w+ to production: healthy in ", out, re.M), out
    answers = {
        m.group(1): (int(m.group(2)), m.group(3), m.group(4))
        for m in re.finditer(
            r"^(staging|production) +http://127\.0\.0\.1:(\d+)  version (\S+)  GET / -> (.+)$",
            out,
            re.M,
        )
    }
    assert answers["staging"][1] == answers["production"][1]  # the same version
    assert answers["staging"][1].startswith("0.3.0-rc.1+sha.")
    assert answers["staging"][2] == "Hello from staging!"
    assert answers["production"][2] == "Hello from production!"
    # the same digest runs in both, as `conveyor envs` and `conveyor trace` say
    row = rf"^(staging|production) +{target} +127\.0\.0\.1:\d+ +\S+ +(\S+) "
    rows = re.findall(row, out, re.M)
    assert sorted(rows) == [("production", digest[:19]), ("staging", digest[:19])], out
    assert re.search(r"^  production +healthy .* by \S+ +\(promote \w+\)$", out, re.M)
    assert re.search(r"^DORA figures of production, the last 30 days", out, re.M)
    assert "deployment frequency:   1 deployment, 0.03/day" in out
    for environment in ("production", "staging"):
        assert re.search(rf"^stopped {environment}: 2 replica\(s\) and the front proxy;", out, re.M)
    # nothing it started is left: front ports closed, no replica or proxy
    for port, _, _ in answers.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    home = demo_home(out)
    assert processes_naming(home) == [], f"processes of {home} are left"


def demo_home(output: str) -> str:
    found = re.search(r"^listening on unix://(/\S+)/conveyord\.sock$", output, re.M)
    assert found is not None, output
    return found.group(1)


def processes_naming(text: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(cmdline.decode(errors="replace"))
    return found


@pytest.mark.slow
def test_the_demo_without_docker_builds_once_and_delivers_on_the_process_target() -> None:
    result = run_demo("--no-docker")
    check_demo(result, PIPELINE)
    assert "greeter.pyz" in result.stdout
    check_delivery(result, "process")


@pytest.mark.slow
@pytest.mark.docker
def test_the_demo_with_docker_builds_pushes_and_delivers_on_the_docker_target(
    docker_engine: object,
) -> None:
    result = run_demo()
    check_demo(result, DOCKER_PIPELINE)
    assert "127.0.0.1:5000/demo/greeter" in result.stdout
    assert re.search(r"push +succeeded", result.stdout)
    check_delivery(result, "docker")
    owner = f"conveyor://{socket.gethostname()}{demo_home(result.stdout)}"
    client = docker.from_env()
    try:
        left = client.containers.list(all=True, filters={"label": f"dev.conveyor.owner={owner}"})
    finally:
        client.close()
    assert left == [], [c.name for c in left]
