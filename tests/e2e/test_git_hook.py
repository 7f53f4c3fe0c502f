"""A real push trigger: `conveyor hook install` on a bare repository, then `git push`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess
from tests.support.repos import GIT_ENV, GitRepo, git

PIPELINE = """\
name: pushed
stages:
  check:
    run:
      - test -f conveyor.yaml
      - echo "built $CONVEYOR_COMMIT"
"""


def list_runs(daemon: DaemonProcess) -> list[runs_pb2.Run]:
    return list(daemon.stub.ListRuns(runs_pb2.ListRunsRequest(), timeout=10).runs)


def wait_for_runs(daemon: DaemonProcess, count: int, timeout: float = 15) -> list[runs_pb2.Run]:
    """The daemon's runs, newest first, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        runs = list_runs(daemon)
        if len(runs) >= count or time.monotonic() > deadline:
            assert len(runs) == count, [(r.ref, r.commit) for r in runs]
            return runs
        time.sleep(0.1)


def push(clone: Path, *args: str) -> str:
    """`git push` from the clone; returns its stderr (where the hook's output shows)."""
    result = subprocess.run(
        ["git", "push", *args],
        cwd=clone,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stderr


def test_pushes_to_a_bare_repository_submit_push_triggered_runs(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    bare = tmp_path / "origin.git"
    bare.mkdir()
    git("init", "-q", "--bare", "-b", "main", cwd=bare)
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor.client.cli",
            "hook",
            "install",
            str(bare),
            "--address",
            daemon.address,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert install.returncode == 0, install.stderr
    hook = bare.resolve() / "hooks" / "post-receive"
    assert install.stdout.splitlines()[0] == f"installed {hook}"
    assert hook.stat().st_mode & stat.S_IXUSR

    clone = tmp_path / "clone"
    git("clone", "-q", str(bare), str(clone), cwd=tmp_path)
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=clone)
    work = GitRepo(clone)

    # first push: one run, of the pushed commit, triggered by the push
    first = work.commit({"conveyor.yaml": PIPELINE}, "add the pipeline")
    output = push(clone, "origin", "main")
    assert "remote: run " in output and " submitted: refs/heads/main at commit " in output
    (run,) = wait_for_runs(daemon, 1)
    assert run.trigger == runs_pb2.TRIGGER_KIND_PUSH
    assert (run.ref, run.commit) == ("refs/heads/main", first)
    assert run.repository == str(bare.resolve())
    assert run.pipeline == "pushed"
    final = daemon.wait(run.id)
    assert final.status == runs_pb2.RUN_STATUS_SUCCEEDED, final.reason
    assert f"built {first}\n".encode() in daemon.logs(run.id, "check")

    # second push: a second run, of the new commit
    second = work.commit({"README": "hello\n"}, "a readme")
    push(clone, "origin", "main")
    newest, older = wait_for_runs(daemon, 2)
    assert older.id == run.id
    assert (newest.ref, newest.commit, newest.trigger) == (
        "refs/heads/main",
        second,
        runs_pb2.TRIGGER_KIND_PUSH,
    )
    assert daemon.wait(newest.id).status == runs_pb2.RUN_STATUS_SUCCEEDED

    # the same commit pushed to another branch is another run (of that branch)
    push(clone, "origin", "main:release")
    release = wait_for_runs(daemon, 3)[0]
    assert (release.ref, release.commit) == ("refs/heads/release", second)
    assert daemon.wait(release.id).status == runs_pb2.RUN_STATUS_SUCCEEDED

    # deleting a branch starts nothing (the hook runs before `git push` returns)
    push(clone, "origin", "--delete", "release")
    assert git("branch", "--list", "release", cwd=bare) == ""
    assert [r.id for r in list_runs(daemon)] == [release.id, newest.id, run.id]
