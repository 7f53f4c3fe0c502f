"""The `conveyor` CLI as a user runs it: a subprocess talking to a real `conveyord`.

Most tests share one daemon per module (`conveyord`) to stay quick; they use pipeline
names of their own, so run numbers (`#1`) and listings do not depend on test order.
Tests of daemon-wide state (the run listing, status counters, a stopped daemon) get a
fresh daemon each (`daemon`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import pytest

from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess
from tests.support.repos import GitRepo, git, make_repo

PipelineRepo = Callable[[str], GitRepo]

CLI = [sys.executable, "-m", "conveyor.client.cli"]
WAIT = 30.0  # upper bound for anything a test waits on; never reached when all is well
UNKNOWN_RUN = "0123456789abcdef0123"  # well-formed, never issued

TWO_STAGES = """\
name: {name}
stages:
  build:
    run: [echo compiling, echo linking]
  test:
    needs: [build]
    run: {test}
"""

# `lint` succeeds, `test` fails with exit code 3, `build` needs `test` and is skipped.
FAILING = """\
name: {name}
stages:
  lint:
    run: echo lint ok
  test:
    run: [echo testing, exit 3]
  build:
    needs: [lint, test]
    run: echo never
"""

# `talk` prints, waits for the test to create the gate file, prints again. The log also
# holds each command, so the printed words are made at run time ("first-talk").
GATED = """\
name: {name}
stages:
  talk:
    timeout: 60s
    run: |
      echo "first-$CONVEYOR_STAGE"
      while [ ! -e {gate} ]; do sleep 0.05; done
      echo "second-$CONVEYOR_STAGE"
  after:
    needs: [talk]
    run: echo after
"""


@pytest.fixture(scope="module")
def conveyord() -> Iterator[DaemonProcess]:
    """One real daemon for the tests of this module that do not need a fresh one."""
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))  # short: a unix socket lives there
    proc = DaemonProcess(home, args=["--kill-grace", "1"]).start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(home, ignore_errors=True)


def cli_env(address: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "CONVEYOR_ADDRESS": address, "CONVEYOR_CONNECT_TIMEOUT": "5"}
    env.pop("CONVEYOR_HOME", None)
    env.update(extra)
    return env


def conveyor(
    daemon: DaemonProcess | str,
    *args: str,
    cwd: Path | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end, with CONVEYOR_ADDRESS naming `daemon` (or an address)."""
    address = daemon if isinstance(daemon, str) else daemon.address
    result = subprocess.run(
        [*CLI, *args],
        env=cli_env(address, **env),
        cwd=cwd or Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=2 * WAIT,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def conveyor_bytes(
    daemon: DaemonProcess, *args: str, **env: str
) -> subprocess.CompletedProcess[bytes]:
    """Like `conveyor`, for byte-exact output (`logs`)."""
    result = subprocess.run(
        [*CLI, *args], env=cli_env(daemon.address, **env), capture_output=True, timeout=2 * WAIT
    )
    assert b"Traceback" not in result.stderr, result.stderr
    return result


def plain(log: bytes) -> bytes:
    """A log as `conveyor logs` prints it without colours (the daemon's command
    lines are bold)."""
    return re.sub(rb"\x1b\[[0-9;]*m", b"", log)


def normalize(line: str) -> str:
    """An event line without its clock and durations: "build succeeded (attempt 1, exit 0)"."""
    clock, _, text = line.partition(" ")
    assert re.fullmatch(r"\d\d:\d\d:\d\d", clock), line
    return re.sub(r" in \d[\dhms.]*", "", text)


def stage_event(line: str) -> str:
    """`normalize`, without the message: "test failed (attempt 1, exit 3)"."""
    return normalize(line).split(":")[0]


class Follower:
    """A CLI process still running; its stdout is collected as it comes."""

    def __init__(self, address: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, *args],
            env=cli_env(address),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._out = bytearray()
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while data := os.read(fd, 65536):
            with self._cond:
                self._out += data
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def output(self) -> bytes:
        with self._cond:
            return bytes(self._out)

    def wait_for(self, needle: bytes) -> None:
        """Block until `needle` was printed; fails if the process ends without it."""
        with self._cond:
            self._cond.wait_for(lambda: needle in self._out or self._eof, WAIT)
            assert needle in self._out, f"{needle!r} not in the output: {bytes(self._out)!r}"

    def finish(self) -> tuple[int, bytes, str]:
        """Wait for the process to exit on its own; its exit code, stdout and stderr."""
        code = self.proc.wait(WAIT)
        self._reader.join(WAIT)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode()
        assert "Traceback" not in err, err
        return code, self.output, err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def follow(daemon: DaemonProcess, *args: str) -> Iterator[Follower]:
    follower = Follower(daemon.address, *args)
    try:
        yield follower
    finally:
        follower.close()


def submitted_id(stdout: str) -> str:
    match = re.match(r"run ([0-9a-f]+) #\d+ ", stdout)
    assert match, stdout
    return match.group(1)


def get_run(daemon: DaemonProcess, run_id: str) -> runs_pb2.Run:
    return daemon.stub.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=10)


def gated_run(
    daemon: DaemonProcess, pipeline_repo: PipelineRepo, tmp_path: Path, name: str
) -> tuple[runs_pb2.Run, Path]:
    """A run whose `talk` stage is running (it prints "first-talk") until `gate` exists."""
    gate = tmp_path / "gate"
    repo = pipeline_repo(GATED.format(name=name, gate=gate))
    run = daemon.submit(repo.path)
    daemon.wait_for_stage(run.id, "talk")
    return run, gate


# -- submit -------------------------------------------------------------------------


def test_submit_from_inside_a_checkout_uses_its_root_branch_and_head(
    conveyord: DaemonProcess, tmp_path: Path
) -> None:
    repo = make_repo(
        tmp_path / "app",
        {
            "conveyor.yaml": TWO_STAGES.format(name="app", test="echo ok"),
            "ci/nightly.yaml": "name: nightly\nstages:\n  only:\n    run: echo nightly\n",
            "src/main.txt": "v1\n",
        },
        branch="feature",
    )
    first_commit = git("rev-parse", "HEAD", cwd=repo.path)
    head = repo.commit({"src/main.txt": "v2\n"}, "second")
    (repo.path / "src" / "main.txt").write_text("uncommitted\n")

    # from a subfolder: the checkout's root, its branch and HEAD, with a warning
    first = conveyor(conveyord, "submit", "--idempotency-key", "k1", cwd=repo.path / "src")
    assert first.returncode == 0, first.stderr
    run_id = submitted_id(first.stdout)
    assert first.stdout == f"run {run_id} #1 app submitted: feature at commit {head[:10]}\n"
    assert first.stderr == (
        f"conveyor: warning: runs commit {head[:10]}; uncommitted changes are not included\n"
    )
    run = get_run(conveyord, run_id)
    assert (run.repository, run.ref, run.commit) == (str(repo.path.resolve()), "feature", head)
    assert (run.trigger, run.pipeline_path) == (runs_pb2.TRIGGER_KIND_MANUAL, "conveyor.yaml")

    again = conveyor(conveyord, "submit", "--idempotency-key", "k1", cwd=repo.path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == (
        f"run {run_id} #1 app already submitted (same idempotency key):"
        f" feature at commit {head[:10]}\n"
    )

    # explicit ref, pipeline file and trigger; JSON output
    other = conveyor(
        conveyord,
        "submit",
        "--file",
        "ci/nightly.yaml",
        "--trigger",
        "api",
        "--ref",
        first_commit,
        "-o",
        "json",
        cwd=repo.path,
    )
    assert other.returncode == 0, other.stderr
    data = json.loads(other.stdout)
    assert data["created"] is True
    assert data["run"]["pipeline"] == "nightly"
    assert data["run"]["pipeline_path"] == "ci/nightly.yaml"
    assert data["run"]["trigger"] == "TRIGGER_KIND_API"
    assert (data["run"]["ref"], data["run"]["commit"]) == (first_commit, first_commit)

    for rid in (run_id, data["run"]["id"]):
        assert conveyord.wait(rid).status == runs_pb2.RUN_STATUS_SUCCEEDED


def test_submit_outside_a_checkout_says_so(conveyord: DaemonProcess, tmp_path: Path) -> None:
    result = conveyor(conveyord, "submit", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "conveyor: error: not inside a git working tree: use --repo PATH\n"


def test_submit_watch_exits_0_on_success_with_a_closing_summary(
    conveyord: DaemonProcess, pipeline_repo: PipelineRepo
) -> None:
    repo = pipeline_repo(TWO_STAGES.format(name="green", test="echo tested"))
    result = conveyor(conveyord, "submit", "--watch", cwd=repo.path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    run_id = submitted_id(lines[0])
    assert lines[1] == f"watching run {run_id} #1 green (stages: build, test)"
    assert [stage_event(line) for line in lines[2:-3]] == [
        "run queued",
        "run running",
        "build running (attempt 1)",
        "build succeeded (attempt 1, exit 0)",
        "test running (attempt 1)",
        "test succeeded (attempt 1, exit 0)",
        "run succeeded",
    ]
    assert re.fullmatch(rf"run {run_id} #1 green succeeded in \d+\.\ds", lines[-3])
    assert [line.split()[:2] for line in lines[-2:]] == [
        ["build", "succeeded"],
        ["test", "succeeded"],
    ]


def test_submit_watch_exits_1_on_failure_with_a_closing_summary(
    conveyord: DaemonProcess, pipeline_repo: PipelineRepo
) -> None:
    repo = pipeline_repo(FAILING.format(name="red"))
    result = conveyor(conveyord, "submit", "-w", cwd=repo.path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    run_id = submitted_id(lines[0])
    events = [normalize(line) for line in lines[2:-4]]
    assert "test failed (attempt 1, exit 3): exit code 3" in events
    assert "build skipped: needs test, which did not succeed" in events
    assert events[-1] == "run failed: stage 'test' failed: exit code 3"
    summary = lines[-4:]
    assert re.fullmatch(
        rf"run {run_id} #1 red failed in \d+\.\ds: stage 'test' failed: exit code 3", summary[0]
    )
    assert summary[1].split()[:2] == ["lint", "succeeded"]
    assert summary[2].split()[:2] == ["test", "failed"]
    assert summary[2].endswith("  exit code 3")
    assert summary[3].split()[:3] == ["build", "skipped", "-"]
    assert summary[3].endswith("  needs test, which did not succeed")


# -- runs, show ---------------------------------------------------------------------


def test_runs_lists_newest_first_with_filters_in_text_and_json(
    daemon: DaemonProcess, pipeline_repo: PipelineRepo
) -> None:
    alpha_ok = pipeline_repo(TWO_STAGES.format(name="alpha", test="echo ok"))
    alpha_bad = pipeline_repo(TWO_STAGES.format(name="alpha", test="exit 1"))
    beta = pipeline_repo(TWO_STAGES.format(name="beta", test="echo ok"))
    runs = [daemon.wait(daemon.submit(r.path).id) for r in (alpha_ok, alpha_bad, beta)]
    newest_first = [run.id for run in reversed(runs)]

    def ids(result: subprocess.CompletedProcess[str]) -> list[str]:
        assert result.returncode == 0, result.stderr
        return [row.split()[0] for row in result.stdout.splitlines()[1:]]

    result = conveyor(daemon, "runs")
    assert (result.returncode, result.stderr) == (0, "")
    header, *rows = result.stdout.splitlines()
    columns = ["ID", "#", "PIPELINE", "STATUS", "REF", "COMMIT", "CREATED", "DURATION"]
    assert header.split() == columns
    assert [row.split()[:6] for row in rows] == [
        [runs[2].id, "#1", "beta", "succeeded", "main", runs[2].commit[:10]],
        [runs[1].id, "#2", "alpha", "failed", "main", runs[1].commit[:10]],
        [runs[0].id, "#1", "alpha", "succeeded", "main", runs[0].commit[:10]],
    ]

    assert ids(conveyor(daemon, "runs", "--pipeline", "alpha")) == newest_first[1:]
    assert ids(conveyor(daemon, "runs", "--status", "failed")) == [runs[1].id]
    assert ids(conveyor(daemon, "runs", "--commit", runs[2].commit[:8])) == [runs[2].id]
    result = conveyor(daemon, "runs", "--pipeline", "gamma")
    assert (result.returncode, result.stdout) == (0, "no runs\n")

    result = conveyor(
        daemon, "--output", "json", "runs", "--pipeline", "alpha", "--status", "succeeded"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [run["id"] for run in data] == [runs[0].id]
    assert (data[0]["status"], data[0]["commit"]) == ("RUN_STATUS_SUCCEEDED", runs[0].commit)
    assert [s["name"] for s in data[0]["stages"]] == ["build", "test"]

    page = conveyor(daemon, "runs", "--limit", "2", "-o", "json")
    assert [run["id"] for run in json.loads(page.stdout)] == newest_first[:2]
    token = re.fullmatch(r"more runs: --page-token (\S+)\n", page.stderr)
    assert token, page.stderr
    rest = conveyor(daemon, "runs", "--limit", "2", "--page-token", token.group(1), "-o", "json")
    assert [run["id"] for run in json.loads(rest.stdout)] == newest_first[2:]
    assert rest.stderr == ""


def test_show_gives_the_run_and_each_stage_status_and_reason(
    conveyord: DaemonProcess, pipeline_repo: PipelineRepo
) -> None:
    repo = pipeline_repo(FAILING.format(name="shown"))
    run = conveyord.wait(conveyord.submit(repo.path).id)

    result = conveyor(conveyord, "show", run.id)
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == f"run {run.id}  #1 shown"
    blank = lines.index("")
    fields = {
        label.strip(): value.strip()
        for label, _, value in (line.partition(":") for line in lines[1:blank])
    }
    assert fields["status"] == "failed (stage 'test' failed: exit code 3)"
    assert fields["repository"] == str(repo.path)
    assert fields["ref"] == "main"
    assert fields["commit"] == run.commit
    assert fields["pipeline file"] == "conveyor.yaml"
    assert fields["trigger"] == "manual"
    assert lines[blank + 1].split() == ["STAGE", "STATUS", "ATTEMPT", "EXIT", "DURATION", "REASON"]
    stages = {line.split()[0]: line for line in lines[blank + 2 :]}
    assert list(stages) == ["lint", "test", "build"]
    assert stages["lint"].split()[:4] == ["lint", "succeeded", "1", "0"]
    assert stages["test"].split()[:4] == ["test", "failed", "1", "3"]
    assert stages["test"].endswith("  exit code 3")
    assert stages["build"].split()[:5] == ["build", "skipped", "-", "-", "-"]
    assert stages["build"].endswith("  needs test, which did not succeed")

    result = conveyor(conveyord, "show", run.id, "-o", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["id"], data["status"], data["trigger"]) == (
        run.id,
        "RUN_STATUS_FAILED",
        "TRIGGER_KIND_MANUAL",
    )
    assert [(s["name"], s["status"]) for s in data["stages"]] == [
        ("lint", "STAGE_STATUS_SUCCEEDED"),
        ("test", "STAGE_STATUS_FAILED"),
        ("build", "STAGE_STATUS_SKIPPED"),
    ]
    assert (data["stages"][1]["exit_code"], data["stages"][1]["reason"]) == (3, "exit code 3")
    assert data["stages"][2]["reason"] == "needs test, which did not succeed"
    assert data["stages"][2]["needs"] == ["lint", "test"]


def test_show_of_an_unknown_or_malformed_run_id_is_a_one_line_error(
    conveyord: DaemonProcess,
) -> None:
    result = conveyor(conveyord, "show", UNKNOWN_RUN)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"conveyor: error: run {UNKNOWN_RUN} not found\n"

    result = conveyor(conveyord, "show", "nope")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "conveyor: error: run_id 'nope' is malformed (expected hex digits)\n"


# -- watch --------------------------------------------------------------------------


def test_watch_follows_a_live_run_line_by_line_to_its_end(
    conveyord: DaemonProcess, pipeline_repo: PipelineRepo, tmp_path: Path
) -> None:
    run, gate = gated_run(conveyord, pipeline_repo, tmp_path, "watched")
    with follow(conveyord, "watch", run.id) as watcher:
        watcher.wait_for(b" talk running (attempt 1)\n")
        assert b"talk succeeded" not in watcher.output
        gate.touch()
        code, out, err = watcher.finish()
    assert (code, err) == (0, "")
    lines = out.decode().splitlines()
    assert lines[0] == f"watching run {run.id} #1 watched (stages: talk, after)"
    assert [stage_event(line) for line in lines[1:-3]] == [
        "run queued",
        "run running",
        "talk running (attempt 1)",
        "talk succeeded (attempt 1, exit 0)",
        "after running (attempt 1)",
        "after succeeded (attempt 1, exit 0)",
        "run succeeded",
    ]
    assert re.fullmatch(rf"run {run.id} #1 watched succeeded in \d+\.\ds", lines[-3])
    assert [line.split()[:2] for line in lines[-2:]] == [
        ["talk", "succeeded"],
        ["after", "succeeded"],
    ]


def test_watch_of_a_finished_failed_run_replays_it_and_exits_1(
    conveyord: DaemonProcess, pipeline_repo: PipelineRepo
) -> None:
    run = conveyord.wait(conveyord.submit(pipeline_repo(FAILING.format(name="replay")).path).id)
    result = conveyor(conveyord, "watch", run.id)
    assert (result.returncode, result.stderr) == (1, "")
    lines = result.stdout.splitlines()
    assert lines[0] == f"watching run {run.id} #1 replay (stages: lint, test, build)"
    assert normalize(lines[-5]) == "run failed: stage 'test' failed: exit code 3"
    assert lines[-4].startswith(f"run {run.id} #1 replay failed in ")
    assert [line.split()[:2] for line in lines[-3:]] == [
        ["lint", "succeeded"],
        ["test", "failed"],
        ["build", "skipped"],
    ]


# -- findings: what fails the gate first, baselines (issue 8.3, 8.4) ---------------------

# A project as found in the wild: a src layout, a test suite (bandit flags every
# assert: low), a test fixture with a key-like string and a settings file with a
# secret keyword (detect-secrets: high), and a SHA-1 it uses on purpose (high).
PROJECT = {
    "pyproject.toml": '[project]\nname = "app"\nversion = "1.0"\n\n[tool.ruff]\nfix = true\n',
    "src/app/__init__.py": "",
    "src/app/auth.py": (
        "import hashlib\nimport hmac\n\n\ndef sign(key: bytes, data: bytes) -> str:\n"
        "    return hmac.new(key, data, hashlib.sha1).hexdigest()\n"
    ),
    "tools/release.py": (
        "import hashlib\n\n\ndef artifact_id(data: bytes) -> str:\n"
        "    return hashlib.sha1(data).hexdigest()\n"
    ),
    "src/app/settings.py": 'SECRET_KEY = "django-insecure-s3cr3t-k3y-for-local-runs-0123456789"\n',
    "tests/fixtures/keys.py": 'AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"\n',
    **{
        f"tests/test_{name}.py": (
            f"from app import auth\n\n\ndef test_{name}_signs():\n"
            f"    assert auth.sign(b'k', b'{name}')\n    assert len(auth.sign(b'k', b'x')) == 40\n"
        )
        for name in ("auth", "api", "models", "views", "forms", "utils", "cli", "db", "io", "log")
    },
}
SCAN = """\
name: {name}
stages:
  scan:
    uses: scan
    env: {{PATH: "{path}"}}
    with: {with_}
"""


def scan_pipeline(name: str, with_: str = "{}") -> str:
    """The scan stage, with the test's own bandit and detect-secrets on its PATH."""
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    return SCAN.format(name=name, path=path, with_=with_)


def report_lines(stdout: str, stage_name: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{stage_name} ("))
    return lines[start:]


def test_show_lists_what_fails_the_gate_first_and_baseline_accepts_it(
    conveyord: DaemonProcess, repo_factory: Callable[..., GitRepo]
) -> None:
    repo = repo_factory({**PROJECT, "conveyor.yaml": scan_pipeline("findings")})
    run = conveyord.wait(conveyord.submit(repo.path).id)
    scan = run.stages[0]
    assert scan.status == runs_pb2.STAGE_STATUS_FAILED, scan.reason
    highs = sum(1 for f in scan.report.findings if f.severity == "high")
    lows = sum(1 for f in scan.report.findings if f.severity == "low")
    assert highs >= 3 and lows >= 20
    # the daemon serves the findings the gate failed on first (bandit's low
    # findings came first in the tools' own order)
    assert [f.fails_gate for f in scan.report.findings] == [True] * highs + [False] * lows

    result = conveyor(conveyord, "show", run.id)
    assert result.returncode == 0, result.stderr
    report = report_lines(result.stdout, "scan")
    severities = [line.split()[1] for line in report[1:-1]]
    assert severities[:highs] == ["high"] * highs
    assert len(severities) == 20
    hidden = len(scan.report.findings) - 20
    assert report[-1] == f"  ... and {hidden} more; conveyor show {run.id} --findings all"

    every = conveyor(conveyord, "show", run.id, "--findings", "all")
    assert len(report_lines(every.stdout, "scan")) == 1 + len(scan.report.findings)
    only_high = report_lines(
        conveyor(conveyord, "show", run.id, "--severity", "high").stdout, "scan"
    )
    assert [line.split()[1] for line in only_high[1:-1]] == ["high"] * highs
    assert only_high[-1] == f"  ({len(scan.report.findings) - highs} below high not shown)"

    # the documented workflow: baseline what fails the gate, commit, point the scan at it
    written = conveyor(
        conveyord,
        "baseline",
        run.id,
        "scan",
        "--min-severity",
        "high",
        "--write",
        ".conveyor/scan-baseline.json",
        cwd=repo.path,
    )
    assert written.returncode == 0, written.stderr
    assert written.stdout.startswith(
        f"wrote .conveyor/scan-baseline.json: {highs} entries added;"
        f" left out: {len(scan.report.findings) - highs} below high\n"
    )
    document = json.loads((repo.path / ".conveyor" / "scan-baseline.json").read_text())
    assert len(document["findings"]) == highs
    printed = conveyor(conveyord, "baseline", run.id, "scan", "--min-severity", "high")
    assert json.loads(printed.stdout) == document

    repo.commit(
        {
            ".conveyor/scan-baseline.json": json.dumps(document, indent=2),
            "conveyor.yaml": scan_pipeline("findings", "{baseline: .conveyor/scan-baseline.json}"),
        }
    )
    again = conveyord.wait(conveyord.submit(repo.path).id).stages[0]
    assert again.status == runs_pb2.STAGE_STATUS_SUCCEEDED, again.reason
    assert {(f.severity, f.baselined) for f in again.report.findings} == {
        ("high", True),
        ("low", False),
    }
    assert again.report.counts["baselined"] == highs


# -- server strings with terminal escapes (issue 9.9) ------------------------------------

HOSTILE_GROUP = "grp\x1b]0;pwned\x07\x1b[2J"
HOSTILE_REASON = "stop\x1b]2;title\x07\x1b[H\x1b[3A\x9b2J"
HOSTILE_KIND = "kind\x1b]0;pwned\x07\x1b[2J"
ESCAPED = {
    HOSTILE_GROUP: "grp\\x1b]0;pwned\\x07\\x1b[2J",
    HOSTILE_REASON: "stop\\x1b]2;title\\x07\\x1b[H\\x1b[3A\\x9b2J",
    HOSTILE_KIND: "kind\\x1b]0;pwned\\x07\\x1b[2J",
}


def yaml_quoted(text: str) -> str:
    """``text`` as a double-quoted YAML scalar, control characters escaped."""
    return '"' + "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text) + '"'


def assert_shown_escaped(output: str | bytes, *hostile: str) -> None:
    text = output.decode() if isinstance(output, bytes) else output
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text), text
    for value in hostile:
        assert ESCAPED[value] in text, (ESCAPED[value], text)


def test_terminal_escapes_in_server_strings_are_shown_escaped(
    conveyord: DaemonProcess, repo_factory: Callable[..., GitRepo], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    pipeline = GATED.format(name="hostile", gate=gate).replace(
        "stages:", f"concurrency:\n  group: {yaml_quoted(HOSTILE_GROUP)}\nstages:", 1
    )
    bad = f"name: bad\nstages:\n  x:\n    uses: {yaml_quoted(HOSTILE_KIND)}\n"
    pipeline_file = "ci\x1b]0;path\x07.yaml"
    other = TWO_STAGES.format(name="pathy", test="echo ok")
    repo = repo_factory({"conveyor.yaml": pipeline, "bad.yaml": bad, pipeline_file: other})

    # validate and submit: the unknown `uses:` value in a diagnostic, an error
    result = conveyor(conveyord, "validate", str(repo.path / "bad.yaml"))
    assert result.returncode == 1
    assert_shown_escaped(result.stdout, HOSTILE_KIND)
    result = conveyor(conveyord, "submit", "--file", "bad.yaml", cwd=repo.path)
    assert result.returncode == 1
    assert_shown_escaped(result.stderr, HOSTILE_KIND)

    # a pipeline path with escapes: run, or refused; shown escaped either way
    result = conveyor(conveyord, "submit", "--file", pipeline_file, cwd=repo.path)
    assert_shown_escaped(result.stdout + result.stderr)
    assert (
        "ci\\x1b]0;path\\x07.yaml" in result.stdout + result.stderr
        or "control character" in result.stderr  # the daemon refuses such paths
        or result.returncode == 0
    )
    if result.returncode == 0:
        shown = conveyor(conveyord, "show", submitted_id(result.stdout))
        assert "pipeline file: ci\\x1b]0;path\\x07.yaml\n" in shown.stdout

    # submit --watch, cancelled with a hostile reason; then show and watch
    with follow(
        conveyord, "submit", "--repo", str(repo.path), "--ref", "main", "--watch"
    ) as watcher:
        watcher.wait_for(b" talk running (attempt 1)\n")
        run_id = submitted_id(watcher.output.decode())
        # the daemon refuses control characters in a reason; the refusal is
        # printed escaped
        refused = conveyor(conveyord, "cancel", run_id, "--reason", HOSTILE_REASON)
        assert refused.returncode == 1
        assert_shown_escaped(refused.stdout + refused.stderr)
        assert "control character" in refused.stderr
        cancel = conveyor(conveyord, "cancel", run_id, "--reason", "stop")
        assert cancel.returncode == 0, cancel.stderr
        code, out, err = watcher.finish()
    assert (code, err) == (1, "")
    assert_shown_escaped(out)
    show = conveyor(conveyord, "show", run_id)
    assert_shown_escaped(show.stdout, HOSTILE_GROUP)
    assert f"  concurrency:   {ESCAPED[HOSTILE_GROUP]}\n" in show.stdout
    assert_shown_escaped(conveyor(conveyord, "watch", run_id).stdout)
    assert (
        json.loads(conveyor(conveyord, "show", run_id, "-o", "json").stdout)["concurrency_group"]
        == HOSTILE_GROUP
    )  # JSON keeps the data as it is (escaped by JSON itself)


# -- logs ---------------------------------------------------------------------------


def test_logs_of_one_stage_and_of_all_stages(
    conveyord: DaemonProcess, pipeline_repo: PipelineRepo
) -> None:
    repo = pipeline_repo(
        "name: logged\nstages:\n"
        "  build:\n    run: [echo compiling, echo linking]\n"
        "  partial:\n    needs: [build]\n    run: printf 'no newline'\n"
        "  last:\n    needs: [partial]\n    run: echo done\n"
    )
    run = conveyord.wait(conveyord.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
    logs = {name: conveyord.logs(run.id, name) for name in ("build", "partial", "last")}
    assert logs["build"].endswith(b"\ncompiling\n\x1b[1m$ echo linking\x1b[0m\nlinking\n")
    assert logs["partial"].endswith(b"no newline")

    result = conveyor_bytes(conveyord, "logs", run.id, "build", "--color", "always")
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == logs["build"]

    result = conveyor_bytes(conveyord, "logs", run.id)  # piped: no colours
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == (
        b"==> stage build <==\n"
        + plain(logs["build"])
        + b"==> stage partial <==\n"
        + plain(logs["partial"])
        + b"\n==> stage last <==\n"  # a newline ends the unfinished line before a header
        + plain(logs["last"])
    )

    missing = conveyor(conveyord, "logs", run.id, "deploy")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == (
        f"conveyor: error: run {run.id} has no stage 'deploy' (stages: build, partial, last)\n"
    )


def test_logs_follow_streams_a_running_stage_until_it_ends(
    conveyord: DaemonProcess, pipeline_repo: PipelineRepo, tmp_path: Path
) -> None:
    run, gate = gated_run(conveyord, pipeline_repo, tmp_path, "followed")
    with (
        follow(conveyord, "logs", run.id, "talk", "-f") as one,
        follow(conveyord, "logs", "-f", run.id) as every,
    ):
        one.wait_for(b"\nfirst-talk\n")
        every.wait_for(b"\nfirst-talk\n")
        # both are live, mid-stage: nothing of what comes after the gate yet
        assert b"\nsecond-talk" not in one.output
        assert b"==> stage after <==" not in every.output
        gate.touch()
        code, out, err = one.finish()
        assert (code, err) == (0, "")
        code, all_out, err = every.finish()
        assert (code, err) == (0, "")
    assert conveyord.wait(run.id).status == runs_pb2.RUN_STATUS_SUCCEEDED
    talk = plain(conveyord.logs(run.id, "talk"))
    assert out == talk
    assert b"\nfirst-talk\n" in out and out.endswith(b"\nsecond-talk\n")
    assert all_out == (
        b"==> stage talk <==\n"
        + talk
        + b"==> stage after <==\n"
        + plain(conveyord.logs(run.id, "after"))
    )


def test_logs_keep_colours_only_when_asked_and_never_other_escapes(
    conveyord: DaemonProcess, pipeline_repo: PipelineRepo
) -> None:
    repo = pipeline_repo(
        "name: escapes\nstages:\n  tool:\n    run: >-\n"
        "      printf 'start\\033]0;owned\\007\\033[2J\\033[H\\033[31mred\\033[0m"
        " 50%%\\r100%%\\n'\n"
    )
    run = conveyord.wait(conveyord.submit(repo.path).id)
    raw = conveyord.logs(run.id, "tool")
    assert b"start\x1b]0;owned\x07\x1b[2J\x1b[H\x1b[31mred\x1b[0m 50%\r100%\n" in raw

    piped = conveyor_bytes(conveyord, "logs", run.id, "tool")
    assert piped.returncode == 0, piped.stderr
    assert b"\x1b" not in piped.stdout and b"\x07" not in piped.stdout
    assert piped.stdout.endswith(b"\nstartred 50%\n100%\n")
    for args, env in [
        (["--color", "always"], {}),
        (["--color", "always"], {"NO_COLOR": "1"}),  # the option wins over the environment
    ]:
        coloured = conveyor_bytes(conveyord, "logs", run.id, "tool", *args, **env)
        assert coloured.stdout.endswith(b"\nstart\x1b[31mred\x1b[0m 50%\n100%\n")
        assert b"\x1b]" not in coloured.stdout and b"\x1b[2J" not in coloured.stdout
    never = conveyor_bytes(conveyord, "logs", run.id, "tool", "--color", "never")
    assert never.stdout == piped.stdout


# -- cancel -------------------------------------------------------------------------


def test_cancel_stops_a_running_run_and_refuses_a_finished_one(
    conveyord: DaemonProcess, pipeline_repo: PipelineRepo, tmp_path: Path
) -> None:
    run, _gate = gated_run(conveyord, pipeline_repo, tmp_path, "stopped")
    result = conveyor(conveyord, "cancel", run.id, "--reason", "not today")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"cancel requested for run {run.id} #1 stopped (status: cancelled)\n"
    final = get_run(conveyord, run.id)
    assert (final.status, final.reason) == (runs_pb2.RUN_STATUS_CANCELLED, "not today")
    assert [s.status for s in final.stages] == [
        runs_pb2.STAGE_STATUS_CANCELLED,
        runs_pb2.STAGE_STATUS_CANCELLED,
    ]

    again = conveyor(conveyord, "cancel", run.id)
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == (
        f"conveyor: error: run {run.id} already finished (cancelled); nothing to cancel\n"
    )


# -- validate -----------------------------------------------------------------------


def test_validate_accepts_a_valid_file(conveyord: DaemonProcess, tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_text(TWO_STAGES.format(name="ok", test="echo hi"))
    result = conveyor(conveyord, "validate", cwd=tmp_path)  # default: ./conveyor.yaml
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "conveyor.yaml: valid (2 stages: build, test)\n"

    result = conveyor(conveyord, "validate", str(tmp_path / "conveyor.yaml"), "-o", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["valid"], data["pipeline_name"], data["stage_order"]) == (
        True,
        "ok",
        ["build", "test"],
    )


def test_validate_reports_file_line_column_diagnostics(
    conveyord: DaemonProcess, tmp_path: Path
) -> None:
    missing = tmp_path / "missing-need.yaml"
    text = TWO_STAGES.format(name="bad", test="echo hi").replace(
        "needs: [build]", "needs: [build, deploy]"
    )
    missing.write_text(text)
    line_no, line = next((i, ln) for i, ln in enumerate(text.splitlines(), 1) if "deploy" in ln)
    column = line.index("deploy") + 1  # where the unknown name is
    result = conveyor(conveyord, "validate", str(missing))
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout == (
        f"{missing}:{line_no}:{column}: stages.test.needs[1]:"
        " unknown stage 'deploy'; expected one of: build\n"
    )

    result = conveyor(conveyord, "validate", str(missing), "-o", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert [(d["line"], d["column"], d["path"]) for d in data["diagnostics"]] == [
        (line_no, column, "stages.test.needs[1]")
    ]

    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("name: bad\nstages:\n  build:\n    run: [echo hi\n  x: }\n")
    result = conveyor(conveyord, "validate", str(malformed))
    assert (result.returncode, result.stderr) == (1, "")
    assert re.fullmatch(rf"{re.escape(str(malformed))}:\d+:\d+: invalid YAML: .+\n", result.stdout)

    absent = tmp_path / "absent.yaml"
    result = conveyor(conveyord, "validate", str(absent))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"conveyor: error: cannot read {absent}: No such file or directory\n"


# -- plugins, status ------------------------------------------------------------------


def test_plugins_lists_the_builtin_plugins_with_versions(conveyord: DaemonProcess) -> None:
    result = conveyor(conveyord, "plugins")
    assert (result.returncode, result.stderr) == (0, "")
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "DISTRIBUTION", "VERSION", "PROVIDES", "HOOKS"]
    table = {row.split()[0]: row.split()[1:3] for row in rows}
    assert table["run"] == ["conveyor-plugins", version("conveyor-plugins")]
    assert table["local_executor"] == ["conveyor-daemon", version("conveyor-daemon")]

    result = conveyor(conveyord, "plugins", "-o", "json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["run"]["provides"] == ["stage kind: run"]
    assert plugins["local_executor"]["provides"] == ["executor: local"]
    assert all(p["error"] == "" for p in plugins.values())


def test_status_counts_the_active_runs(
    daemon: DaemonProcess, pipeline_repo: PipelineRepo, tmp_path: Path
) -> None:
    result = conveyor(daemon, "status")
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == f"conveyord {version('conveyor-daemon')} at {daemon.address}"
    assert re.fullmatch(r"  runs: +0 queued, 0 active \(max \d+\)", lines[2])
    assert re.fullmatch(r"  stages: +0 active", lines[3])

    run, gate = gated_run(daemon, pipeline_repo, tmp_path, "busy")
    busy = conveyor(daemon, "status", "-o", "json")
    assert busy.returncode == 0, busy.stderr
    data = json.loads(busy.stdout)
    assert (data["active_runs"], data["active_stages"], data["queued_runs"]) == (1, 1, 0)
    gate.touch()
    assert daemon.wait(run.id).status == runs_pb2.RUN_STATUS_SUCCEEDED


# -- no daemon ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["status"], ["show", UNKNOWN_RUN], ["logs", "-f", UNKNOWN_RUN]])
def test_an_unreachable_daemon_is_exit_2_and_one_line(daemon_home: Path, args: list[str]) -> None:
    address = f"unix://{daemon_home}/absent.sock"
    result = conveyor(address, *args, CONVEYOR_CONNECT_TIMEOUT="0.2")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"conveyor: error: cannot reach the Conveyor daemon at {address}:"
        " is conveyord running? (set CONVEYOR_ADDRESS or --address)\n"
    )


def test_address_flag_overrides_the_environment_and_a_stopped_daemon_is_exit_2(
    daemon: DaemonProcess, daemon_home: Path
) -> None:
    absent = f"unix://{daemon_home}/absent.sock"
    for args in (["status", "--address", daemon.address], ["--address", daemon.address, "runs"]):
        result = conveyor(absent, *args)
        assert (result.returncode, result.stderr) == (0, ""), args
    daemon.stop()
    result = conveyor(daemon.address, "runs", CONVEYOR_CONNECT_TIMEOUT="0.2")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"conveyor: error: cannot reach the Conveyor daemon at {daemon.address}:"
        " is conveyord running? (set CONVEYOR_ADDRESS or --address)\n"
    )
