"""The first hour on a real project (issue 8), through a real daemon, on the
fixture project of :mod:`tests.support.realproject`: its own ruff
configuration with ``fix = true``, a src layout, a test suite, pinned
pre-commit hooks and a key-like test fixture.

The daemon runs as the README advises: from this repository's virtual
environment, with that environment's ``bin`` first on ``PATH`` (and here
also ``VIRTUAL_ENV`` and ``PYTHONPATH`` pointing into it, passed through to
stages), so what leaks from it into stages shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.v1 import runs_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.realproject import PRE_COMMIT, UNUSED_IMPORT, WEAK_HASH, make_realproject
from tests.support.repos import GitRepo

FAILED = runs_pb2.STAGE_STATUS_FAILED
SUCCEEDED = runs_pb2.STAGE_STATUS_SUCCEEDED
#: The environment this test suite (and so the daemon) runs in.
VENV = sys.prefix
VENV_BIN = sysconfig.get_path("scripts")
CONVEYOR_LINE = re.compile(rb"\x1b\[1;36m\[conveyor\]")


def venv_environment() -> dict[str, str]:
    """The daemon's environment as the README's PATH advice makes it, plus
    the other variables a virtual environment can leak through."""
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != VENV_BIN]
    return {
        "PATH": os.pathsep.join([VENV_BIN, *rest]),
        "VIRTUAL_ENV": VENV,
        "PYTHONPATH": sysconfig.get_path("purelib"),
        "CONVEYOR_STAGE_ENV_PASSTHROUGH": "PATH,HOME,LANG,VIRTUAL_ENV,PYTHONPATH",
    }


def start_daemon(**settings: str) -> DaemonProcess:
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))  # short: a unix socket lives there
    return DaemonProcess(home, args=["--kill-grace", "1"], env={**venv_environment(), **settings})


@pytest.fixture(scope="module")
def conveyord() -> Iterator[DaemonProcess]:
    """One daemon for the module, on default settings."""
    proc = start_daemon().start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(proc.home, ignore_errors=True)


def cli(daemon: DaemonProcess, *args: str) -> str:
    env = {**os.environ, "CONVEYOR_ADDRESS": daemon.address}
    env.pop("CONVEYOR_HOME", None)
    result = subprocess.run(
        [sys.executable, "-m", "conveyor.client.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def pipeline(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def project(tmp_path: Path, conveyor_yaml: str) -> GitRepo:
    return make_realproject(tmp_path / "bookshelf", pipeline(conveyor_yaml))


def conveyor_lines_start_lines(log: bytes) -> bool:
    return all(
        m.start() == 0 or log[m.start() - 1 : m.start()] == b"\n"
        for m in CONVEYOR_LINE.finditer(log)
    )


# -- 8.1: analysis stages never change the checkout ------------------------------

ANALYSIS = """
name: bookshelf-analysis
stages:
  lint:
    uses: lint
    with: {fail_on: []}        # report only: the next stage runs either way
  scan:
    uses: scan
    with: {fail_on: critical}
  unchanged:
    needs: [lint, scan]
    run:
      - git status --porcelain --ignored --untracked-files=all
      - git diff --exit-code
      - test -z "$(git status --porcelain --ignored --untracked-files=all)"
"""


def test_lint_reports_what_ruff_would_fix_and_leaves_the_checkout_as_committed(
    conveyord: DaemonProcess, tmp_path: Path
) -> None:
    repo = project(tmp_path, ANALYSIS)
    run = conveyord.wait(conveyord.submit(repo.path).id)

    lint = stage(run, "lint")
    assert lint.status == SUCCEEDED, lint.reason
    (finding,) = lint.report.findings
    assert (finding.rule, finding.file, finding.line) == ("F401", *UNUSED_IMPORT)
    assert "`os` imported but unused" in finding.message
    unchanged = stage(run, "unchanged")
    log = conveyord.logs(run.id, "unchanged").decode()
    assert unchanged.status == SUCCEEDED, f"{unchanged.reason}\n{log}"
    assert "catalog.py" not in log and ".ruff_cache" not in log
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED


# -- 8.2: stages do not inherit the daemon's virtual environment -----------------

ENVIRONMENT = """
name: bookshelf-environment
stages:
  environment:
    run:
      - 'echo "PATH=$PATH"'
      - 'echo "VIRTUAL_ENV=${VIRTUAL_ENV-unset}"'
      - 'echo "PYTHONPATH=${PYTHONPATH-unset}"'
      - 'echo "ruff=$(command -v ruff || echo none)"'
  lint:
    uses: lint
    with: {fail_on: []}
  scan:
    uses: scan
    with: {fail_on: critical}
"""


def stage_environment(log: str) -> dict[str, str]:
    found = dict(re.findall(r"^(PATH|VIRTUAL_ENV|PYTHONPATH|ruff)=(.*)$", log, re.M))
    assert set(found) == {"PATH", "VIRTUAL_ENV", "PYTHONPATH", "ruff"}, log
    return found


def test_stages_do_not_see_the_daemons_virtual_environment_but_the_kinds_find_their_tools(
    conveyord: DaemonProcess, tmp_path: Path
) -> None:
    repo = project(tmp_path, ENVIRONMENT)
    run = conveyord.wait(conveyord.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED, [s.reason for s in run.stages]

    seen = stage_environment(conveyord.logs(run.id, "environment").decode())
    path = seen["PATH"].split(os.pathsep)
    assert VENV_BIN not in path, "the daemon's virtual environment is off the stage's PATH"
    assert path == [p for p in venv_environment()["PATH"].split(os.pathsep) if p != VENV_BIN]
    assert seen["VIRTUAL_ENV"] == "unset"
    assert seen["PYTHONPATH"] == "unset"
    assert not seen["ruff"].startswith(VENV), "a user command does not find Conveyor's ruff"
    # ... while the built-in kinds run the tools installed beside Conveyor
    assert stage(run, "lint").report.findings[0].rule == "F401"
    assert stage(run, "scan").report.counts["high"] >= 1


def test_stage_inherit_venv_hands_stages_the_daemons_environment(tmp_path: Path) -> None:
    daemon = start_daemon(CONVEYOR_STAGE_INHERIT_VENV="true").start()
    try:
        repo = project(tmp_path, ENVIRONMENT)
        run = daemon.wait(daemon.submit(repo.path).id)
        seen = stage_environment(daemon.logs(run.id, "environment").decode())
    finally:
        daemon.stop()
        shutil.rmtree(daemon.home, ignore_errors=True)
    assert seen["PATH"].split(os.pathsep)[0] == VENV_BIN
    assert seen["VIRTUAL_ENV"] == VENV
    assert seen["PYTHONPATH"] == sysconfig.get_path("purelib")
    assert seen["ruff"] == os.path.join(VENV_BIN, "ruff")


# -- 8.3: the findings that fail a gate come first --------------------------------

GATES = """
name: bookshelf-gates
stages:
  lint:
    uses: lint
  scan:
    uses: scan
"""
#: The fixture's findings at or above high, as the scan reports them.
HIGH = {
    (PRE_COMMIT, 3, "Hex High Entropy String"),
    (PRE_COMMIT, 9, "Hex High Entropy String"),
    (*WEAK_HASH, "B324"),
    ("tests/fixtures/credentials.ini", 3, "AWS Access Key"),
    ("tests/fixtures/credentials.ini", 4, "AWS Access Key"),
    ("tests/fixtures/credentials.ini", 4, "Base64 High Entropy String"),
    ("tests/fixtures/credentials.ini", 4, "Secret Keyword"),
}


def test_the_findings_that_fail_the_gate_are_listed_first_and_named_in_the_reason(
    conveyord: DaemonProcess, tmp_path: Path
) -> None:
    repo = project(tmp_path, GATES)
    run = conveyord.wait(conveyord.submit(repo.path).id)

    scan = stage(run, "scan")
    report = scan.report
    assert scan.status == FAILED and scan.reason == report.gate_reason
    assert scan.reason.startswith(f"{len(HIGH)} findings at or above high (")
    assert scan.reason.endswith(f"; first: {PRE_COMMIT}:3 Hex High Entropy String")
    # the report as stored and served: what fails the gate first
    failing = report.findings[: len(HIGH)]
    assert {(f.file, f.line, f.rule) for f in failing} == HIGH
    assert all(f.fails_gate and f.severity == "high" for f in failing)
    assert not any(f.fails_gate for f in report.findings[len(HIGH) :])
    assert {f.severity for f in report.findings[len(HIGH) :]} == {"low"}
    low = len(report.findings) - len(HIGH)
    assert low > 10, "more low findings than the log lists, all before B324 in bandit's order"

    # the log: the failing findings, then low ones up to 10, then how many more
    log = conveyord.logs(run.id, "scan")
    assert conveyor_lines_start_lines(log)
    listed = [line for line in log.decode().splitlines() if re.search(r"  (high|low)  \S+/", line)]
    assert len(listed) == 10
    assert all("  high  " in line and "(fails gate)" in line for line in listed[: len(HIGH)])
    assert all("  low  " in line for line in listed[len(HIGH) :])
    assert f"... and {len(report.findings) - 10} more not shown;" in log.decode()
    assert f"conveyor show {run.id} --findings all" in log.decode()

    lint = stage(run, "lint")
    path, line = UNUSED_IMPORT
    assert lint.reason == (f"1 finding at levels error, warning (F401); first: {path}:{line} F401")
    assert lint.report.findings[0].fails_gate

    shown = cli(conveyord, "show", run.id).splitlines()
    start = next(i for i, line in enumerate(shown) if line.startswith("scan (scan): "))
    rows = shown[start + 1 : start + 1 + len(HIGH)]
    assert all("(fails gate)" in row and "  high  " in row for row in rows), rows


# -- 8.6: output hygiene -----------------------------------------------------------

HYGIENE = """
name: bookshelf-hygiene
stages:
  lint:
    uses: lint
    run: printf 'checking the ruff configuration'
    with: {{tools: [ruff], fail_on: []}}
  unit:
    uses: test
    env: {{PYTHONPATH: src}}
    run: {python} -m pytest -q -p no:cacheprovider --junitxml="$CONVEYOR_REPORTS_DIR/junit.xml"
    with: {{rerun_failed: 1}}
"""
BROKEN_TESTS = """
import pytest


@pytest.fixture
def database():
    raise ConnectionError("no database here")


def test_total():
    assert 1 + 1 == 3


def test_title():
    assert "signals".title() == "signals"


def test_authors():
    assert [] == ["A. Writer"]


def test_store(database):
    pass


def test_load(database):
    pass
"""


def test_conveyor_lines_start_lines_and_reruns_count_failures_and_errors(
    conveyord: DaemonProcess, tmp_path: Path
) -> None:
    repo = project(tmp_path, HYGIENE.format(python=sys.executable))
    repo.commit({"tests/test_broken.py": BROKEN_TESTS}, "tests that fail and err")
    run = conveyord.wait(conveyord.submit(repo.path).id)

    lint_log = conveyord.logs(run.id, "lint")
    assert b"checking the ruff configuration\n\x1b[1;36m[conveyor]\x1b[0m lint: " in lint_log
    assert conveyor_lines_start_lines(lint_log)

    unit = stage(run, "unit")
    assert unit.status == FAILED
    assert (unit.report.counts["failed"], unit.report.counts["errors"]) == (3, 2)
    unit_log = conveyord.logs(run.id, "unit").decode()
    assert "re-running 3 failed and 2 errored tests (1/1): tests.test_broken." in unit_log
    assert conveyor_lines_start_lines(unit_log.encode())
