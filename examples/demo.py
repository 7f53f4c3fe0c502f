"""The demo: a throwaway daemon runs the example service's pipeline end to end.

1. copies examples/demo-service into a fresh git repository,
2. starts `conveyord` on embedded defaults (SQLite, local executor) in a
   temporary home,
3. runs `conveyor submit --watch` inside the checkout (live DAG view, then a
   closing summary), shows the build stage's log,
4. stops the daemon with SIGTERM.

Run it with `make demo`. Exits 0 when the pipeline succeeded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVICE = HERE / "demo-service"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Demo",
    "GIT_AUTHOR_EMAIL": "demo@conveyor.invalid",
    "GIT_COMMITTER_NAME": "Demo",
    "GIT_COMMITTER_EMAIL": "demo@conveyor.invalid",
}


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def make_repository(root: Path) -> Path:
    repo = root / "demo-service"
    shutil.copytree(SERVICE, repo, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "demo"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo


def wait_for_socket(daemon: subprocess.Popen[bytes], socket: Path, log: Path) -> None:
    deadline = time.monotonic() + 20
    while not socket.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"conveyord did not start:\n{log.read_text()}")
        time.sleep(0.05)


def conveyor(*args: str, cwd: Path, env: dict[str, str]) -> int:
    cmd = [sys.executable, "-m", "conveyor.client.cli", *args]
    print(f"$ conveyor {' '.join(args)}", flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env).returncode


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    home = root / "home"
    home.mkdir()
    log = root / "conveyord.log"
    # The demo's test stage runs the pytest installed beside Conveyor, so its
    # stages keep Conveyor's virtual environment (stage_inherit_venv; by
    # default a daemon takes it off the stages' PATH).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **os.environ,
        "CONVEYOR_HOME": str(home),
        "PATH": path,
        "CONVEYOR_STAGE_INHERIT_VENV": "true",
    }
    env.pop("CONVEYOR_ADDRESS", None)
    try:
        step("a git repository for the demo service")
        repo = make_repository(root)
        print(repo)

        step("starting conveyord (SQLite store, local executor)")
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "conveyor.daemon.main"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_socket(daemon, home / "conveyord.sock", log)
        print(f"listening on unix://{home / 'conveyord.sock'}")
        try:
            conveyor("plugins", cwd=repo, env=env)
            conveyor("validate", cwd=repo, env=env)

            step("running the pipeline")
            status = conveyor("submit", "--watch", cwd=repo, env=env)

            step("the build stage's log")
            runs = subprocess.run(
                [sys.executable, "-m", "conveyor.client.cli", "runs", "--output", "json"],
                cwd=repo,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            import json

            run_id = json.loads(runs.stdout)[0]["id"]
            conveyor("logs", run_id, "build", cwd=repo, env=env)
            conveyor("show", run_id, cwd=repo, env=env)
        finally:
            step("stopping conveyord")
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            print(f"conveyord exited with {daemon.returncode}")
        print("\ndemo " + ("succeeded" if status == 0 else f"FAILED (exit {status})"))
        return status
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
