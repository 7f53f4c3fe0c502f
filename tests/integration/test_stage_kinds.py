"""The lint, test and scan stage kinds through a real daemon, real git
repositories and the real tools (ruff, pytest, bandit, detect-secrets)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.daemon.reports import Finding
from conveyor.plugins.reports import baseline_document
from conveyor.v1 import pipelines_pb2, runs_pb2, server_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.repos import GitRepo

FAILED = runs_pb2.STAGE_STATUS_FAILED
SUCCEEDED = runs_pb2.STAGE_STATUS_SUCCEEDED
RepoFactory = Callable[..., GitRepo]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def conveyord(receiver: OtlpReceiver) -> Iterator[DaemonProcess]:
    """One daemon for the module, exporting its spans to ``receiver``."""
    home = Path(tempfile.mkdtemp(prefix="cv-", dir="/tmp"))  # short: a unix socket lives there
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    proc = DaemonProcess(home, args=["--kill-grace", "1"], env=env).start()
    try:
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(home, ignore_errors=True)


def stage_span(receiver: OtlpReceiver, run_id: str, name: str) -> ReceivedSpan:
    def find(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
        for span in spans:
            attrs = span.attributes
            if attrs.get("cicd.pipeline.task.run.id") == f"{run_id}/{name}":
                return span
        return None

    spans = receiver.wait_for(lambda spans: find(spans) is not None)
    found = find(spans)
    assert found is not None
    return found


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


def rules(s: runs_pb2.Stage) -> set[str]:
    return {f.rule for f in s.report.findings}


# -- lint --------------------------------------------------------------------

SARIF = {
    "version": "2.1.0",
    "runs": [
        {
            "tool": {"driver": {"name": "eslint", "rules": [{"id": "no-eval"}]}},
            "results": [
                {
                    "ruleId": "no-eval",
                    "level": "warning",
                    "message": {"text": "eval can be harmful."},
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": {"uri": "web/app.js"},
                                "region": {"startLine": 3, "startColumn": 5},
                            }
                        }
                    ],
                }
            ],
        }
    ],
}

LINT_PIPELINE = """
name: lint
stages:
  dirty:
    uses: lint
  notes-only:
    uses: lint
    with: {fail_on: [note]}
  clean:
    uses: lint
    with: {paths: [clean]}
  sarif:
    uses: lint
    run: printf '%s' "$SARIF" > "$CONVEYOR_REPORTS_DIR/eslint.sarif"
    env: {SARIF: '{sarif}'}
    with: {tools: [ruff], paths: [clean], fail_on: [error]}
  setup-fails:
    uses: lint
    run: exit 3
    with: {tools: [ruff]}
  no-report:
    uses: lint
    run: echo "linted, nothing written"
"""


def test_lint_reports_ruff_and_sarif_findings_and_gates_on_levels(
    conveyord: DaemonProcess, repo_factory: RepoFactory, receiver: OtlpReceiver
) -> None:
    repo = repo_factory(
        {
            "conveyor.yaml": LINT_PIPELINE.replace("{sarif}", json.dumps(SARIF)),
            "app.py": "import os\n\n\ndef main():\n    return undefined_name\n",
            "clean/ok.py": '"""A clean module."""\n\nANSWER = 42\n',
            "web/app.js": "// app\n\nfunction f(x) {\n    eval(x);\n}\n",
        }
    )
    broken_repo = repo_factory(
        {
            "conveyor.yaml": "name: broken\nstages:\n  lint:\n    uses: lint\n",
            "ruff.toml": "this is = not [toml\n",
            "ok.py": "ANSWER = 42\n",
        }
    )
    broken_id = conveyord.submit(broken_repo.path).id
    run = conveyord.wait(conveyord.submit(repo.path).id)
    assert run.status == runs_pb2.RUN_STATUS_FAILED

    dirty = stage(run, "dirty")
    assert dirty.status == FAILED, dirty.reason
    report = dirty.report
    assert report.kind == "lint" and not report.gate_passed
    assert dirty.reason == report.gate_reason
    assert {"F401", "F821"} <= rules(dirty)
    by_rule = {f.rule: f for f in report.findings}
    assert (by_rule["F401"].file, by_rule["F401"].line, by_rule["F401"].column) == ("app.py", 1, 8)
    assert (by_rule["F821"].file, by_rule["F821"].line) == ("app.py", 5)
    assert "undefined_name" in by_rule["F821"].message
    assert all(f.tool == "ruff" and f.severity == "error" for f in report.findings)
    assert all(f.fingerprint and not f.baselined for f in report.findings)
    assert report.counts["total"] == len(report.findings) >= 2
    assert report.counts["error"] == len(report.findings)
    assert list(report.sources) == ["ruff.json"]
    log = conveyord.logs(run.id, "dirty").decode()
    assert "F401" in log and "gate failed" in log
    assert '"code"' not in log, "ruff's JSON goes to the report file, not the log"

    notes = stage(run, "notes-only")
    assert notes.status == SUCCEEDED, notes.reason
    assert notes.report.gate_passed and {"F401", "F821"} <= rules(notes)

    clean = stage(run, "clean")
    assert clean.status == SUCCEEDED, clean.reason
    assert clean.report.counts["total"] == 0 and not clean.report.findings

    sarif = stage(run, "sarif")
    assert sarif.status == SUCCEEDED, sarif.reason  # a warning; the gate is on errors only
    assert list(sarif.report.sources) == ["ruff.json", "eslint.sarif"]
    (eslint,) = sarif.report.findings
    assert (eslint.tool, eslint.rule, eslint.severity) == ("eslint", "no-eval", "warning")
    assert (eslint.file, eslint.line, eslint.column) == ("web/app.js", 3, 5)
    assert sarif.report.counts["warning"] == 1

    broken = stage(conveyord.wait(broken_id), "lint")
    assert broken.status == FAILED and broken.exit_code == 2
    assert broken.reason == "ruff exited with 2 and wrote no report"
    assert "ruff.toml" in conveyord.logs(broken_id, "lint").decode(), "ruff's own error"
    setup = stage(run, "setup-fails")
    assert (setup.status, setup.exit_code) == (FAILED, 3)
    assert setup.reason == (
        "the run commands exited with 3 and wrote no SARIF report to $CONVEYOR_REPORTS_DIR"
    )
    no_report = stage(run, "no-report")
    assert no_report.status == FAILED and not no_report.HasField("report")
    assert no_report.reason.startswith("no lint report: ")

    span = stage_span(receiver, run.id, "dirty")
    assert span.attributes["conveyor.report.findings"] == len(report.findings)
    assert span.attributes["conveyor.report.gate.passed"] is False
    assert span.attributes["cicd.pipeline.task.type"] == "test"

    shown = cli(conveyord, "show", run.id)
    assert "dirty (lint): " in shown and "gate failed" in shown
    assert "app.py:1:8" in shown and "ruff/F401" in shown
    data = json.loads(cli(conveyord, "--output", "json", "show", run.id))
    (dirty_json,) = [s for s in data["stages"] if s["name"] == "dirty"]
    assert {"F401", "F821"} <= {f["rule"] for f in dirty_json["report"]["findings"]}
    assert dirty_json["report"]["gate_passed"] is False


# -- test --------------------------------------------------------------------

TEST_APP = """
import pytest


def test_passes():
    assert 1 + 1 == 2


def test_fails():
    assert 1 + 1 == 3, "arithmetic is broken"


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass
"""

TEST_FLAKY = """
import os
from pathlib import Path

MARKERS = Path({markers!r})


def test_steady():
    pass


def test_flaky():
    marker = MARKERS / (os.environ["CONVEYOR_RUN_ID"] + "-" + os.environ["CONVEYOR_STAGE"])
    if not marker.exists():
        marker.write_text("failed once")
        raise AssertionError("fails the first time only")
"""

# This Python by its path: stages do not have the daemon's virtual environment
# on their PATH (where pytest is installed).
PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"
TEST_PIPELINE = f"""
name: tests
stages:
  unit:
    uses: test
    run: {PYTEST} tests/test_app.py --junitxml="$CONVEYOR_REPORTS_DIR/junit.xml"
  flaky:
    uses: test
    run: {PYTEST} tests/test_flaky.py --junitxml="$CONVEYOR_REPORTS_DIR/junit.xml"
    with: {{rerun_failed: 1}}
  flaky-strict:
    uses: test
    run: {PYTEST} tests/test_flaky.py --junitxml="$CONVEYOR_REPORTS_DIR/junit.xml"
    with: {{rerun_failed: 2, allow_flaky: false}}
  malformed:
    uses: test
    run: printf '<testsuite><testcase name="x">' > "$CONVEYOR_REPORTS_DIR/broken.xml"
  no-xml:
    uses: test
    run: echo "tests ran, reports forgotten"
  rerun-lost:
    uses: test
    run: |
      if [ -e @MARKERS@/$CONVEYOR_RUN_ID-lost ]; then echo "reports lost"; exit 0; fi
      touch @MARKERS@/$CONVEYOR_RUN_ID-lost
      {PYTEST} tests/test_app.py --junitxml="$CONVEYOR_REPORTS_DIR/junit.xml"
    with: {{rerun_failed: 1}}
"""


def test_test_kind_counts_results_reruns_flaky_tests_and_rejects_bad_reports(
    conveyord: DaemonProcess, repo_factory: RepoFactory, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    repo = repo_factory(
        {
            "conveyor.yaml": TEST_PIPELINE.replace("@MARKERS@", str(markers)),
            "tests/test_app.py": TEST_APP,
            "tests/test_flaky.py": TEST_FLAKY.format(markers=str(markers)),
        }
    )
    run = conveyord.wait(conveyord.submit(repo.path).id)

    unit = stage(run, "unit")
    assert unit.status == FAILED and unit.exit_code == 1
    report = unit.report
    assert report.kind == "test" and not report.gate_passed
    assert dict(report.counts) == {
        "total": 3,
        "passed": 1,
        "failed": 1,
        "errors": 0,
        "skipped": 1,
        "flaky": 0,
    }
    failed, skipped = report.tests
    assert failed.outcome == "failed" and failed.name.endswith("test_fails")
    assert "arithmetic is broken" in failed.message
    assert skipped.outcome == "skipped" and skipped.name.endswith("test_skipped")
    assert unit.reason == report.gate_reason
    assert list(report.sources) == ["junit.xml"]
    assert stage_span(receiver, run.id, "unit").attributes["conveyor.report.tests.failed"] == 1

    flaky = stage(run, "flaky")
    assert flaky.status == SUCCEEDED, flaky.reason
    assert flaky.report.gate_passed
    assert flaky.report.counts["flaky"] == 1 and flaky.report.counts["failed"] == 0
    assert flaky.report.counts["passed"] == 1 and flaky.report.counts["total"] == 2
    (case,) = flaky.report.tests
    assert case.outcome == "flaky" and case.name.endswith("test_flaky")
    assert "fails the first time only" in case.message
    assert list(flaky.report.sources) == ["junit.xml", "rerun-1/junit.xml"]
    log = conveyord.logs(run.id, "flaky").decode()
    assert "re-running" in log and "flaky" in log

    strict = stage(run, "flaky-strict")
    assert strict.status == FAILED
    assert strict.report.counts["flaky"] == 1 and not strict.report.gate_passed
    assert "flaky" in strict.reason
    assert len(strict.report.sources) == 2, "no second re-run once the test passed"

    malformed = stage(run, "malformed")
    assert malformed.status == FAILED
    assert "broken.xml" in malformed.reason, malformed.reason
    assert "broken.xml" in conveyord.logs(run.id, "malformed").decode()

    no_xml = stage(run, "no-xml")
    assert no_xml.status == FAILED
    assert no_xml.reason == "the test command wrote no JUnit XML to $CONVEYOR_REPORTS_DIR"

    lost = stage(run, "rerun-lost")
    assert lost.status == FAILED
    assert lost.reason == "re-run 1 of the test command wrote no JUnit XML to $CONVEYOR_REPORTS_DIR"
    assert lost.report.counts["failed"] == 1, "the first run's results are kept"
    assert lost.report.gate_reason == lost.reason

    shown = cli(conveyord, "show", run.id)
    assert "unit (test): 3 tests: 1 passed, 1 failed, 1 skipped" in shown
    assert "  flaky  " in shown and "test_flaky" in shown


def test_test_command_failing_with_passing_tests_fails_the_stage(
    conveyord: DaemonProcess, repo_factory: RepoFactory
) -> None:
    repo = repo_factory(
        {
            "conveyor.yaml": f"""
name: exit
stages:
  unit:
    uses: test
    run:
      - {PYTEST} tests/test_ok.py --junitxml="$CONVEYOR_REPORTS_DIR/junit.xml"
      - exit 4
""",
            "tests/test_ok.py": "def test_ok():\n    pass\n",
        }
    )
    run = conveyord.wait(conveyord.submit(repo.path).id)
    unit = stage(run, "unit")
    assert unit.status == FAILED and unit.exit_code == 4
    assert "exited with 4" in unit.reason and "no failed test" in unit.reason
    assert unit.report.counts["passed"] == 1 and not unit.report.gate_passed


# -- scan --------------------------------------------------------------------

SCAN_PIPELINE = """
name: scan
stages:
  everything:
    uses: scan
  code-high:
    uses: scan
    with: {tools: [bandit], paths: [app], fail_on: high}
  code-medium:
    uses: scan
    with: {tools: [bandit], paths: [app], fail_on: medium}
  missing-baseline:
    uses: scan
    with: {tools: [bandit], paths: [app], baseline: .conveyor/nowhere.json}
"""


def aws_key_id() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))


def test_scan_finds_secrets_without_leaking_them_and_gates_on_severity(
    conveyord: DaemonProcess, repo_factory: RepoFactory
) -> None:
    key = aws_key_id()
    hashed = hashlib.sha1(key.encode()).hexdigest()
    repo = repo_factory(
        {
            "conveyor.yaml": SCAN_PIPELINE,
            "settings.py": f'AWS_ACCESS_KEY_ID = "{key}"\nSECRET_TOKEN = "{key}"\n',
            "app/tool.py": "def calculate():\n    return eval(input())\n",
        }
    )
    run = conveyord.wait(conveyord.submit(repo.path).id)

    everything = stage(run, "everything")
    assert everything.status == FAILED, everything.reason
    report = everything.report
    assert report.kind == "scan" and not report.gate_passed
    (secret,) = [f for f in report.findings if f.tool == "detect-secrets" and f.line == 1]
    assert (secret.file, secret.severity) == ("settings.py", "high")
    assert "AWS" in secret.rule
    assert {"B307"} <= {f.rule for f in report.findings if f.tool == "bandit"}
    assert report.counts["high"] >= 1
    assert list(report.sources) == ["bandit.json", "detect-secrets.json"]

    # the key, or its hash, is in no log, no report and no API answer
    for name in ("everything", "code-high", "code-medium", "missing-baseline"):
        log = conveyord.logs(run.id, name).decode()
        assert key not in log and hashed not in log, name
    assert key not in str(run) and hashed not in str(run)
    as_json = cli(conveyord, "--output", "json", "show", run.id)
    assert key not in as_json and hashed not in as_json
    assert "detect-secrets" in as_json
    assert key not in cli(conveyord, "show", run.id)
    assert key not in conveyord.log_path.read_text()

    high = stage(run, "code-high")
    assert high.status == SUCCEEDED, high.reason
    (b307,) = high.report.findings
    assert (b307.tool, b307.rule, b307.severity) == ("bandit", "B307", "medium")
    assert (b307.file, b307.line) == ("app/tool.py", 2)

    medium = stage(run, "code-medium")
    assert medium.status == FAILED and not medium.report.gate_passed
    assert medium.report.counts["medium"] == 1

    missing = stage(run, "missing-baseline")
    assert missing.status == FAILED
    assert ".conveyor/nowhere.json" in missing.reason
    assert not missing.HasField("report")

    # accept the finding in a baseline: the gate passes, the finding stays
    # listed; the baseline's own fingerprints are not taken for secrets
    document = baseline_document([as_finding(b307)])
    repo.commit(
        {
            ".conveyor/scan-baseline.json": json.dumps(document, indent=2),
            "conveyor.yaml": """
name: scan
stages:
  code-medium:
    uses: scan
    with:
      paths: [app, .conveyor]
      fail_on: medium
      baseline: .conveyor/scan-baseline.json
""",
        }
    )
    again = conveyord.wait(conveyord.submit(repo.path).id)
    accepted = stage(again, "code-medium")
    assert accepted.status == SUCCEEDED, accepted.reason
    (finding,) = accepted.report.findings
    assert finding.rule == "B307" and finding.baselined
    assert accepted.report.counts["baselined"] == 1
    assert list(accepted.report.sources) == ["bandit.json", "detect-secrets.json"]
    assert "(baselined)" in cli(conveyord, "show", again.id)


def as_finding(f: runs_pb2.Finding) -> Finding:
    return Finding(
        tool=f.tool,
        rule=f.rule,
        severity=f.severity,
        file=f.file,
        line=f.line,
        column=f.column,
        message=f.message,
        baselined=f.baselined,
        fingerprint=f.fingerprint,
    )


# -- errors ------------------------------------------------------------------


def test_tools_off_the_stage_path_are_found_beside_conveyor_and_timeouts_reach_commands(
    conveyord: DaemonProcess, repo_factory: RepoFactory
) -> None:
    repo = repo_factory(
        {
            "conveyor.yaml": """
name: missing
stages:
  lint:
    uses: lint
    env: {PATH: /nonexistent}
  scan:
    uses: scan
    env: {PATH: /nonexistent}
    with: {tools: [detect-secrets]}
  slow:
    uses: test
    timeout: 1s
    run: sleep 30
""",
            "ok.py": "ANSWER = 42\n",
        }
    )
    run = conveyord.wait(conveyord.submit(repo.path).id)
    # not on the stage's PATH: found in the environment Conveyor runs in (a
    # tool in neither fails the stage: tests/unit/reports/test_kinds_in_process.py)
    lint = stage(run, "lint")
    assert lint.status == SUCCEEDED, lint.reason
    assert list(lint.report.sources) == ["ruff.json"]
    scan = stage(run, "scan")
    assert scan.status == SUCCEEDED, scan.reason
    assert list(scan.report.sources) == ["detect-secrets.json"]
    slow = stage(run, "slow")
    assert slow.status == runs_pb2.STAGE_STATUS_TIMED_OUT, "cancellation reaches the command"
    assert not slow.HasField("report")


def test_the_kinds_are_listed_as_builtin_plugins(conveyord: DaemonProcess) -> None:
    reply = conveyord.stub.ListPlugins(server_pb2.ListPluginsRequest(), timeout=10)
    plugins = {p.name: p for p in reply.plugins}
    for kind in ("lint", "test", "scan"):
        assert list(plugins[kind].provides) == [f"stage kind: {kind}"]
        assert plugins[kind].distribution == "conveyor-plugins" and not plugins[kind].error


@pytest.mark.parametrize(
    ("stage_yaml", "field", "words"),
    [
        ("uses: lint\n    with: {fail_on: [fatal]}", "with.fail_on", "'fatal'"),
        ("uses: lint\n    with: {tools: [pylint]}", "with.tools", "'pylint'"),
        ("uses: lint\n    with: {tools: []}", "with.tools", "at least one tool"),
        ("uses: lint\n    with: {paths: [../elsewhere]}", "with.paths", "inside the repository"),
        ("uses: lint\n    with: {colour: red}", "with.colour", "unknown parameter"),
        ("uses: test", "run", "JUnit XML"),
        ("uses: test\n    run: pytest\n    with: {rerun_failed: 9}", "with.rerun_failed", "0 to 3"),
        ("uses: test\n    run: pytest\n    with: {allow_flaky: maybe}", "with.allow_flaky", "true"),
        ("uses: scan\n    with: {fail_on: severe}", "with.fail_on", "critical"),
        ("uses: scan\n    with: {baseline: /etc/passwd}", "with.baseline", "relative"),
    ],
)
def test_bad_parameters_are_reported_when_the_pipeline_loads(
    conveyord: DaemonProcess, stage_yaml: str, field: str, words: str
) -> None:
    content = f"name: bad\nstages:\n  s:\n    {stage_yaml}\n"
    reply = conveyord.stub.ValidatePipeline(
        pipelines_pb2.ValidatePipelineRequest(content=content, file="conveyor.yaml"), timeout=10
    )
    assert not reply.valid
    messages = [f"{d.path} {d.message}" for d in reply.diagnostics]
    assert any(field in m and words in m for m in messages), messages
