"""The demo: a throwaway daemon builds the example service once and delivers
that same artifact to staging, then to production.

1. copies examples/demo-service into a fresh git repository (its
   environments' front ports changed to free ones),
2. starts `conveyord` on embedded defaults (SQLite, local executor) in a
   temporary home,
3. runs `conveyor submit --watch` inside the checkout (live DAG view, then a
   closing summary), shows the build stage's log and the run,
4. shows the artifact the run built (a zipapp kept by digest; with a Docker
   engine and a registry on 127.0.0.1:5000, a busybox httpd image pushed
   there), verifies its signed provenance and traces it back to its commit
   and stage timings, then runs the pipeline again: the build is a cache hit,
5. deploys the artifact to `staging`, health-gated, and promotes the same
   digest to `production`, which runs it with its own configuration; asks
   each environment's front port for `/version` and `/`: the same version,
   a different greeting,
6. shows `conveyor envs`, `conveyor history production`, `conveyor dora
   production` and `conveyor trace DIGEST` (which now lists the deployments),
7. stops both environments (`conveyor stop`: their replicas and front
   proxies outlive the daemon by design) and the daemon (SIGTERM).

On the `process` target without Docker (`--no-docker`, or when no engine,
registry or base image answers), on the `docker` target with it. Run it with
`make demo`. Exits 0 when the pipeline succeeded and both environments
answered as they should. With `--keep` it waits for Enter before step 7, so
the web dashboard (its sign-in link is printed first) and both environments
can be looked at.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVICE = HERE / "demo-service"
PIPELINES = ("conveyor.yaml", "conveyor.docker.yaml")
#: The front ports the pipeline files name, replaced by free ones.
PORTS = {"staging": 18081, "production": 18082}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Demo",
    "GIT_AUTHOR_EMAIL": "demo@conveyor.invalid",
    "GIT_COMMITTER_NAME": "Demo",
    "GIT_COMMITTER_EMAIL": "demo@conveyor.invalid",
}


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_repository(root: Path, ports: dict[str, int]) -> Path:
    repo = root / "demo-service"
    shutil.copytree(SERVICE, repo, ignore=shutil.ignore_patterns("__pycache__", ".*_cache", "dist"))
    for name in PIPELINES:
        path = repo / name
        text = path.read_text()
        for environment, port in ports.items():
            text = text.replace(f"port: {PORTS[environment]}\n", f"port: {port}\n")
        path.write_text(text)
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "demo"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo


def wait_for_socket(daemon: subprocess.Popen[bytes], socket_path: Path, log: Path) -> None:
    deadline = time.monotonic() + 20
    while not socket_path.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"conveyord did not start:\n{log.read_text()}")
        time.sleep(0.05)


#: What the Docker pipeline needs: an engine, the registry, the base image.
REGISTRY = "http://127.0.0.1:5000/v2/"
BASE_IMAGE = "127.0.0.1:5000/conveyor/busybox:1"
#: Requests to the demo's own services never go through a proxy.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def docker_ready() -> str:
    """ "" when the Docker pipeline can run here, else why not."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        client.images.get(BASE_IMAGE)
    except Exception as exc:
        return f"no Docker engine with {BASE_IMAGE} ({type(exc).__name__})"
    try:
        DIRECT.open(REGISTRY, timeout=3).close()
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


def get(port: int, path: str) -> str:
    """GET http://127.0.0.1:PORT/PATH, as `curl` would; its body, stripped."""
    with DIRECT.open(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return str(answer.read().decode().strip())


def show_answers(ports: dict[str, int]) -> int:
    """Print what each environment answers on its front port; 0 when both
    run the same version with different greetings."""
    seen: dict[str, tuple[str, str]] = {}
    for environment, port in ports.items():
        try:
            version, greeting = get(port, "/version"), get(port, "/")
        except OSError as exc:
            print(f"{environment:<11} http://127.0.0.1:{port}  does not answer: {exc}")
            return 1
        seen[environment] = (version, greeting)
        print(
            f"{environment:<11} http://127.0.0.1:{port}  version {version}  GET / -> {greeting}",
            flush=True,
        )
    (staging_version, staging_greeting), (production_version, production_greeting) = (
        seen["staging"],
        seen["production"],
    )
    if staging_version != production_version or staging_greeting == production_greeting:
        print("expected the same version with different greetings")
        return 1
    print("the same artifact in both, each with its own configuration")
    return 0


def deliver(digest: str, ports: dict[str, int], repo: Path, env: dict[str, str]) -> int:
    """Deploy to staging, promote to production, show where each answers."""
    step("deploying the artifact to staging (health-gated, 2 replicas)")
    status = conveyor("deploy", "staging", digest, cwd=repo, env=env)
    if status != 0:
        return status
    step("promoting the same digest to production, with production's configuration")
    status = conveyor("promote", "staging", "production", cwd=repo, env=env)
    if status != 0:
        return status
    step("where each environment answers")
    status = show_answers(ports)
    step("what runs where, who deployed it, and how delivery goes")
    conveyor("envs", cwd=repo, env=env)
    conveyor("history", "production", cwd=repo, env=env)
    conveyor("dora", "production", cwd=repo, env=env)
    conveyor("trace", digest, cwd=repo, env=env)
    return status


def stop_environments(repo: Path, env: dict[str, str]) -> int:
    """Stop both environments: their replicas and front proxies."""
    step("stopping the environments (replicas and front proxies outlive the daemon)")
    status = 0
    for environment in ("production", "staging"):
        status = conveyor("stop", environment, cwd=repo, env=env) or status
    return status


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    use_docker = "--no-docker" not in args
    # --keep: before stopping anything, wait for Enter (or Ctrl-C), so the
    # dashboard and both environments can be looked at
    keep = "--keep" in args
    root = Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    home = root / "home"
    home.mkdir()
    log = root / "conveyord.log"
    ports = {environment: free_port() for environment in PORTS}
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
        repo = make_repository(root, ports)
        print(repo)
        print(
            f"front ports: staging 127.0.0.1:{ports['staging']},"
            f" production 127.0.0.1:{ports['production']} (free ones, picked for this demo)"
        )

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
        deployed = False
        try:
            step("the web dashboard: this one-time link signs you in while the demo runs")
            conveyor("web-login", cwd=repo, env=env)
            conveyor("plugins", cwd=repo, env=env)
            conveyor("validate", cwd=repo, env=env)

            why_not = docker_ready() if use_docker else "--no-docker"
            pipeline = "conveyor.docker.yaml" if not why_not else "conveyor.yaml"
            build = "image" if not why_not else "build"
            target = "docker" if not why_not else "process"
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
            digest = artifacts[0]["digest"] if artifacts else ""
            if status == 0 and digest:
                status = conveyor("artifacts", "verify", digest, cwd=repo, env=env)
                conveyor("trace", digest, cwd=repo, env=env)

            if status == 0:
                step("the same commit again: the build is a cache hit (build once)")
                status = conveyor("submit", "--watch", "--file", pipeline, cwd=repo, env=env)

            if status == 0:
                print(f"\ndelivering {digest[:19]} on the {target} target")
                deployed = True
                status = deliver(digest, ports, repo, env)
            if keep:
                step("kept running: the dashboard link above, the environments' ports")
                try:
                    input("press Enter to stop the environments and conveyord ")
                except (EOFError, KeyboardInterrupt):
                    print()
        finally:
            try:
                if deployed:
                    status = stop_environments(repo, env) or status
                step("stopping conveyord")
            finally:  # also when printing fails (a closed pipe): no daemon left behind
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(30)
            print(f"conveyord exited with {daemon.returncode}")
        print("\ndemo " + ("succeeded" if status == 0 else f"FAILED (exit {status})"))
        return status
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
