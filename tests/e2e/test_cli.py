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


def conveyor_bytes(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Like `conveyor`, for byte-exact output (`logs`)."""
    result = subprocess.run(
        [*CLI, *args], env=cli_env(daemon.address), capture_output=True, timeout=2 * WAIT
    )
    assert b"Traceback" not in result.stderr, result.stderr
    return result


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

    result = conveyor_bytes(conveyord, "logs", run.id, "build")
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == logs["build"]

    result = conveyor_bytes(conveyord, "logs", run.id)
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == (
        b"==> stage build <==\n"
        + logs["build"]
        + b"==> stage partial <==\n"
        + logs["partial"]
        + b"\n==> stage last <==\n"  # a newline ends the unfinished line before a header
        + logs["last"]
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
    talk = conveyord.logs(run.id, "talk")
    assert out == talk
    assert b"\nfirst-talk\n" in out and out.endswith(b"\nsecond-talk\n")
    assert all_out == (
        b"==> stage talk <==\n" + talk + b"==> stage after <==\n" + conveyord.logs(run.id, "after")
    )


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
