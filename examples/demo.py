"""The demo: a throwaway daemon runs the example service's pipeline end to end.

1. copies examples/demo-service into a fresh git repository,
2. starts `conveyord` on embedded defaults (SQLite, local executor) in a
   temporary home,
3. runs `conveyor submit --watch` inside the checkout (live DAG view, then a
   closing summary), shows the build stage's log and the run,
4. shows the artifact the run built (a tarball kept by digest; with a
   Docker engine and a registry on 127.0.0.1:5000, an image pushed there),
   verifies its signed provenance and traces it back to its commit and
   stage timings, then runs the pipeline again: the build is a cache hit,
5. stops the daemon with SIGTERM.

Run it with `make demo` (`python examples/demo.py --no-docker` for the
pipeline without Docker). Exits 0 when the pipeline succeeded.
"""

from __future__ import annotations

import json
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


#: What the Docker pipeline needs: an engine, the registry, the base image.
REGISTRY = "http://127.0.0.1:5000/v2/"
BASE_IMAGE = "127.0.0.1:5000/conveyor/busybox:1"


def docker_ready() -> str:
    """ "" when the Docker pipeline can run here, else why not."""
    import urllib.request

    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        client.images.get(BASE_IMAGE)
    except Exception as exc:
        return f"no Docker engine with {BASE_IMAGE} ({type(exc).__name__})"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        opener.open(REGISTRY, timeout=3).close()
    except OSError as exc:
        return f"no registry at 127.0.0.1:5000 ({exc})"
    return ""


def capture(*args: str, cwd: Path, env: dict[str, str]) -> str:
    cmd = [sys.executable, "-m", "conveyor.client.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def conveyor(*args: str, cwd: Path, env: dict[str, str]) -> int:
    cmd = [sys.executable, "-m", "conveyor.client.cli", *args]
    print(f"$ conveyor {' '.join(args)}", flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    use_docker = "--no-docker" not in args
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
        # the web dashboard, on a free loopback port
        "CONVEYOR_WEB_LISTEN": "127.0.0.1:0",
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
            step("the web dashboard: this one-time link signs you in while the demo runs")
            conveyor("web-login", cwd=repo, env=env)
            conveyor("plugins", cwd=repo, env=env)
            conveyor("validate", cwd=repo, env=env)

            why_not = docker_ready() if use_docker else "--no-docker"
            pipeline = "conveyor.docker.yaml" if not why_not else "conveyor.yaml"
            build = "image" if not why_not else "build"
            step(
                f"running the pipeline ({pipeline}: "
                + ("image built and pushed to 127.0.0.1:5000)" if not why_not else f"{why_not})")
            )
            status = conveyor("submit", "--watch", "--file", pipeline, cwd=repo, env=env)

            run_id = json.loads(capture("runs", "--output", "json", cwd=repo, env=env))[0]["id"]
            step(f"the {build} stage's log")
            conveyor("logs", run_id, build, cwd=repo, env=env)
            conveyor("show", run_id, cwd=repo, env=env)

            step("the artifact: by digest, with signed provenance, traced to its commit")
            conveyor("artifacts", "ls", cwd=repo, env=env)
            artifacts = json.loads(
                capture("artifacts", "ls", "--output", "json", cwd=repo, env=env)
            )
            if status == 0 and artifacts:
                digest = artifacts[0]["digest"]
                status = conveyor("artifacts", "verify", digest, cwd=repo, env=env)
                conveyor("trace", digest, cwd=repo, env=env)

            if status == 0:
                step("the same commit again: the build is a cache hit (build once)")
                status = conveyor("submit", "--watch", "--file", pipeline, cwd=repo, env=env)
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
