"""Stages cannot reach the daemon's insides (issue 11, item 4).

A daemon running as root runs stages as the stage user: with its own uid
and group, no capabilities, a workspace it may write and nothing else of
the daemon's: a stage that tries to read the database, another run's log,
the signing key, the secrets file and ``/etc/shadow``, to write into the
home, the source repository or ``/etc``, or to replace the workspace's
``.git``, fails at each; it still builds in its workspace, later stages see
its files, git works there, and a report kind's tools write their reports
(a re-run's folder too, which the kind makes between two processes).
"""

from __future__ import annotations

import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.daemon.artifacts.signing import load_or_create
from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess
from tests.support.repos import make_repo
from tests.support.users import STAGE_USER, system_user

pytestmark = pytest.mark.skipif(not hasattr(pwd, "getpwnam"), reason="needs a Unix user database")


@pytest.fixture(scope="module")
def stage_user() -> Iterator[pwd.struct_passwd]:
    with system_user(STAGE_USER) as entry:
        yield entry


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder others may pass through (a stage user must reach its
    workspace under the home), unlike pytest's own temporary folders."""
    root = Path(tempfile.mkdtemp(prefix="cvi-", dir="/tmp"))
    root.chmod(0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


PROBE = r"""
check() {
  if "$@" >/dev/null 2>&1; then echo "ALLOWED: $*"; else echo "DENIED: $*"; fi
}
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
grep -E '^Cap(Inh|Prm|Eff|Amb)' /proc/self/status
check cat "$DAEMON_HOME/conveyor.db"
check cat "$DAEMON_HOME/conveyor.db-wal"
check cat "$OTHER_LOG"
check cat "$DAEMON_HOME/signing-key.pem"
check cat "$DAEMON_HOME/secrets.enc"
check cat /etc/shadow
check ls "$DAEMON_HOME"
check ls "$DAEMON_HOME/logs"
check ls "$DAEMON_HOME/workspaces"
check touch "$DAEMON_HOME/planted"
check touch "$DAEMON_HOME/workspaces/planted"
check touch "$REPO/planted"
check touch /etc/planted
check touch .git/planted
check mv .git .git-moved
check touch built-here
"""


def _verdicts(log: str) -> dict[str, str]:
    verdicts: dict[str, str] = {}
    for line in log.splitlines():
        verdict, _, command = line.partition(": ")
        if verdict in ("ALLOWED", "DENIED"):
            verdicts[command] = verdict
    return verdicts


def _capabilities(log: str) -> dict[str, int]:
    caps: dict[str, int] = {}
    for line in log.splitlines():
        if line.startswith("Cap") and ":" in line:
            name, _, value = line.partition(":")
            caps[name] = int(value.strip(), 16)
    return caps


def test_a_stage_runs_as_the_stage_user_and_cannot_reach_the_daemons_insides(
    stage_user: pwd.struct_passwd, base: Path
) -> None:
    home = base / "home"
    home.mkdir(mode=0o700)
    load_or_create(home)  # the daemon's signing key, as the artifacts store makes it
    repo = make_repo(
        base / "repo",
        {"conveyor.yaml": "name: other\nstages:\n  secret:\n    run: echo the-other-runs-log\n"},
    )
    daemon = DaemonProcess(home, args=["--kill-grace", "1", "--stage-user", STAGE_USER]).start()
    try:
        daemon.log_path.chmod(0o600)
        other = daemon.wait(daemon.submit(repo.path).id)
        assert other.status == runs_pb2.RUN_STATUS_SUCCEEDED
        other_log = home / "logs" / other.id / "secret.log"
        assert b"the-other-runs-log" in other_log.read_bytes()
        (home / "secrets.enc").write_bytes(b"stand-in")
        (home / "secrets.enc").chmod(0o600)
        repo.commit(
            {
                "conveyor.yaml": f"""
name: isolation
env:
  DAEMON_HOME: {home}
  OTHER_LOG: {other_log}
  REPO: {repo.path}
stages:
  probe:
    run: |
{_indent(PROBE, 6)}
  build:
    needs: [probe]
    run:
      - mkdir -p dist && echo built > dist/app.txt
      - echo from-build > output.txt
  tests:
    needs: [probe]
    uses: test
    with: {{rerun_failed: 1}}
    run: |
      if [ -e flaky-marker ]; then outcome=""; else outcome="<failure message='m'/>"; fi
      touch flaky-marker
      echo "<testsuite><testcase classname='t' name='a'>$outcome</testcase></testsuite>" \
        > "$CONVEYOR_REPORTS_DIR/junit.xml"
  after:
    needs: [build, tests]
    run:
      - cat output.txt dist/app.txt
      - git status --short
      - git rev-parse HEAD
      - echo "home=$HOME user=$USER"
      - touch "$HOME/cache-file"
"""
            }
        )
        run = daemon.wait(daemon.submit(repo.path).id)
        probe_log = daemon.logs(run.id, "probe").decode()
        after_log = daemon.logs(run.id, "after").decode()
    finally:
        daemon.stop()
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED, (run.reason, probe_log, after_log)

    assert (
        f"uid={stage_user.pw_uid} gid={stage_user.pw_gid} groups={stage_user.pw_gid}\n" in probe_log
    )
    caps = _capabilities(probe_log)
    assert set(caps) == {"CapInh", "CapPrm", "CapEff", "CapAmb"}, probe_log
    assert all(value == 0 for value in caps.values()), caps

    verdicts = _verdicts(probe_log)
    allowed = {command for command, verdict in verdicts.items() if verdict == "ALLOWED"}
    assert allowed == {"touch built-here"}, probe_log
    assert len(verdicts) == PROBE.count("\ncheck "), probe_log
    assert not (home / "planted").exists() and not (repo.path / "planted").exists()
    assert not Path("/etc/planted").exists()

    assert "from-build\nbuilt\n" in after_log
    assert "?? dist/" in after_log and "?? output.txt" in after_log, after_log
    assert run.commit in after_log
    assert f"user={STAGE_USER}" in after_log
    tests = next(s for s in run.stages if s.name == "tests")
    assert tests.report.counts["flaky"] == 1, tests.report


def test_the_daemon_refuses_a_stage_user_it_cannot_find(base: Path) -> None:
    home = base / "home"
    daemon = DaemonProcess(home, args=["--stage-user", "no-such-conveyor-user"])
    with pytest.raises(RuntimeError, match=r"no-such-conveyor-user.*no such user.*useradd"):
        daemon.start(timeout=10)


def test_the_home_and_what_holds_the_runs_are_closed_to_others(
    stage_user: pwd.struct_passwd, base: Path
) -> None:
    home = base / "home"
    home.mkdir(mode=0o700)
    daemon = DaemonProcess(home, args=["--stage-user", STAGE_USER]).start()
    try:
        modes = {
            path.name: stat.S_IMODE(path.stat().st_mode)
            for path in (
                home,
                home / "conveyor.db",
                home / "logs",
                home / "workspaces",
                home / "conveyord.lock",
                home / "conveyord.sock",
            )
        }
    finally:
        daemon.stop()
    assert modes == {
        home.name: 0o711,
        "conveyor.db": 0o600,
        "logs": 0o700,
        "workspaces": 0o711,
        "conveyord.lock": 0o600,
        "conveyord.sock": 0o600,
    }


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(
        pad + line if line.strip() else line for line in text.strip("\n").splitlines(True)
    )


def test_the_daemon_warns_when_others_may_read_its_home(base: Path) -> None:
    home = base / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    daemon = DaemonProcess(home).start()
    daemon.stop()
    assert f"the home {home} is readable or writable by others (mode 755)" in (
        daemon.log_path.read_text()
    )
