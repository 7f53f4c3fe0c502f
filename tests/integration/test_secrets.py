"""Secrets that never leak (issue 11, item 5).

A daemon holds two secrets: one in its encrypted file (``conveyord secrets
set``), one from its environment (``secrets_from_env``). A pipeline asks
for them by name; its stages print them every way there is (plain, split
across writes with pauses between, char by char, base64 at every
alignment, URL-encoded, hex, inside JSON, on stderr, from a file, in a
failing test's name and message, in a plugin's exception, reason, report,
span attribute and log line). Then every sink is searched for every form:
the log files, the database and its WAL, the exported spans, the API's
answers and the daemon's own log. A secret written inline in a pipeline is
refused before anything is stored; a stage that does not ask for a secret
does not get it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from conveyor.v1 import pipelines_pb2, runs_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.otlp import OtlpReceiver
from tests.support.plugins import write_distribution
from tests.support.repos import GitRepo

DEPLOY_TOKEN = 'Tok3n/with+special="chars"&more?x9'
ENV_TOKEN = "env-provided-0123456789abcdef"
RepoFactory = Callable[..., GitRepo]

LEAK_PY = r"""
import base64, json, os, sys, time, urllib.parse

t = os.environ["DEPLOY_TOKEN"]
b = t.encode()


def out(text):
    sys.stdout.write(text)
    sys.stdout.flush()


out(f"plain: {t}\n")
out("split: " + t[:11])
time.sleep(0.3)
out(t[11:] + "\n")
out("char by char: ")
for c in t:
    out(c)
    time.sleep(0.01)
out("\n")
for prefix in (b"", b"a", b"ab"):
    out("base64: " + base64.b64encode(prefix + b + b"tail").decode() + "\n")
out("base64url: " + base64.urlsafe_b64encode(b"x" + b).decode() + "\n")
out("url: " + urllib.parse.quote(t, safe="") + "\n")
out("url+: " + urllib.parse.quote_plus(t) + "\n")
out("hex: " + b.hex() + " HEX: " + b.hex().upper() + "\n")
out(json.dumps({"token": t}) + "\n")
out("env: " + os.environ["ENV_TOKEN"] + "\n")
os.write(2, f"stderr: {t}\n".encode())
"""

JUNIT_PY = r"""
import os, sys
from xml.sax.saxutils import escape, quoteattr

t = os.environ["DEPLOY_TOKEN"]
with open(sys.argv[1], "w") as f:
    f.write(
        f'<testsuite name="s" tests="2" failures="1">'
        f'<testcase classname="tests" name="test_ok"/>'
        f'<testcase classname="tests" name={quoteattr("test_" + t)}>'
        f'<failure message={quoteattr("expected " + t)}>trace with {escape(t)}</failure>'
        f"</testcase></testsuite>"
    )
"""

LEAKY_PLUGIN = """
import base64
import logging
import sys

from conveyor.plugin import Finding, StageOutcome, StageReport, StageStatus, hookimpl

log = logging.getLogger("leaky")


class Raise:
    name = "leaky-raise"
    description = "raises with a secret in its message"

    def validate(self, spec):
        return []

    async def run(self, ctx):
        raise RuntimeError(f"cannot deploy with token {ctx.env['DEPLOY_TOKEN']}")


class Report:
    name = "leaky-report"
    description = "puts a secret in its reason, report, span and log lines"

    def validate(self, spec):
        return []

    async def run(self, ctx):
        token = ctx.env["DEPLOY_TOKEN"]
        log.warning("the token is %s", token)
        print(f"printed by a plugin: {token}", file=sys.stderr)
        await ctx.log_line(f"a line from the plugin with {token}")
        return StageOutcome(
            StageStatus.FAILED,
            f"refused: {base64.b64encode(token.encode()).decode()} / {token}",
            error_type="refused",
            span_attributes={"leaky.token": token},
            report=StageReport(
                kind="scan",
                findings=[
                    Finding(tool="leaky", rule="r1", severity="high", file="x.py",
                            message=f"found {token}")
                ],
                gate_passed=False,
                gate_reason=f"token {token} found",
            ),
        )


@hookimpl
def conveyor_stage_kinds():
    return [Raise(), Report()]
"""

PIPELINE = """
name: leaky
secrets: [ENV_TOKEN]
stages:
  leak:
    secrets: [DEPLOY_TOKEN, ENV_TOKEN]
    run:
      - python3 leak.py
      - printf '%s' "$DEPLOY_TOKEN" > token.txt && cat token.txt && echo
      - sh -c 'echo "a shell error about $DEPLOY_TOKEN" >&2'
  junit:
    uses: test
    secrets: DEPLOY_TOKEN
    run: python3 junit.py "$CONVEYOR_REPORTS_DIR/junit.xml"
  raise:
    uses: leaky-raise
    secrets: [DEPLOY_TOKEN]
  report:
    uses: leaky-report
    secrets: [DEPLOY_TOKEN]
  default:
    run: >-
      echo "deploy=${DEPLOY_TOKEN:-absent} env=${#ENV_TOKEN}"
  none:
    secrets: []
    run: >-
      echo "deploy=${DEPLOY_TOKEN:-absent} env=${ENV_TOKEN:-absent}"
"""


def forms(value: str) -> dict[str, bytes]:
    """What a sink must not hold: the value in every form the stages print
    (for base64, the part every alignment of it encodes the same way)."""
    raw = value.encode()
    found = {
        "plain": raw,
        "json": json.dumps(value)[1:-1].encode(),
        "url": urllib.parse.quote(value, safe="").encode(),
        "url+": urllib.parse.quote_plus(value).encode(),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }
    for prefix in (b"", b"a", b"ab", b"x"):
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            encoded = encode(prefix + raw)
            found[f"{name}+{len(prefix)}"] = encoded[4 : len(raw) * 4 // 3 - 4]
    return found


def leaks(data: bytes) -> list[str]:
    """The forms of either secret found in ``data``."""
    return [
        f"{secret}:{name}"
        for secret, value in (("DEPLOY_TOKEN", DEPLOY_TOKEN), ("ENV_TOKEN", ENV_TOKEN))
        for name, form in forms(value).items()
        if form in data
    ]


@pytest.fixture
def key_file() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="cvk-", dir="/tmp"))
    try:
        yield folder / "secrets.key"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def conveyord_secrets(home: Path, key_file: Path, *args: str, value: str = "") -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor.daemon.main",
            "secrets",
            "--home",
            str(home),
            "--secrets-key-file",
            str(key_file),
            *args,
        ],
        input=value,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def secret_daemon(
    daemon_home: Path, key_file: Path, tmp_path: Path, receiver: OtlpReceiver
) -> Iterator[DaemonProcess]:
    conveyord_secrets(daemon_home, key_file, "set", "DEPLOY_TOKEN", value=DEPLOY_TOKEN + "\n")
    site = tmp_path / "site"
    write_distribution(site, "leaky", {"leaky": "leaky_plugin"}, {"leaky_plugin": LEAKY_PLUGIN})
    daemon = DaemonProcess(
        daemon_home,
        args=[
            "--secrets-key-file",
            str(key_file),
            "--secrets-from-env",
            "ENV_TOKEN",
            # listed by mistake: a secret is never passed through
            "--stage-env-passthrough",
            "PATH",
            "--stage-env-passthrough",
            "ENV_TOKEN",
        ],
        env={
            "PYTHONPATH": str(site),
            "ENV_TOKEN": ENV_TOKEN,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRICS_EXPORTER": "none",
        },
    ).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _api_answers(daemon: DaemonProcess, run: runs_pb2.Run) -> bytes:
    """Everything the API says about the run, as sent and as text."""
    stub = daemon.stub
    messages: list[object] = [
        stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id), timeout=10),
        stub.ListRuns(runs_pb2.ListRunsRequest(), timeout=10),
        *daemon.events(run.id),
    ]
    for s in run.stages:
        messages += list(
            stub.StreamLogs(runs_pb2.StreamLogsRequest(run_id=run.id, stage=s.name), timeout=30)
        )
    out = b""
    for message in messages:
        out += message.SerializeToString() + str(message).encode()  # type: ignore[attr-defined]
    return out


def test_a_secret_printed_every_way_leaks_into_no_sink(
    secret_daemon: DaemonProcess, repo_factory: RepoFactory, receiver: OtlpReceiver
) -> None:
    daemon = secret_daemon
    repo: GitRepo = repo_factory(
        {"conveyor.yaml": PIPELINE, "leak.py": LEAK_PY, "junit.py": JUNIT_PY}
    )
    run = daemon.wait(daemon.submit(repo.path).id)

    # the stages ran and did print (masked) what they were given
    leak_log = daemon.logs(run.id, "leak")
    assert stage(run, "leak").status == runs_pb2.STAGE_STATUS_SUCCEEDED, leak_log
    assert b"plain: ***\n" in leak_log and b"split: ***\n" in leak_log
    assert b"char by char: ***\n" in leak_log and b"stderr: ***\n" in leak_log
    assert b"env: ***\n" in leak_log and b'{"token": "***"}' in leak_log
    assert b"a shell error about ***" in leak_log
    assert stage(run, "junit").status == runs_pb2.STAGE_STATUS_FAILED
    assert "test_***" in stage(run, "junit").reason
    assert "cannot deploy with token ***" in stage(run, "raise").reason
    reason = stage(run, "report").reason  # base64's last characters also encode what follows
    assert reason.startswith("refused: ***") and reason.endswith(" / ***"), reason
    assert b"a line from the plugin with ***" in daemon.logs(run.id, "report")
    # a stage gets the secrets it asks for (default: the pipeline's), no others
    assert f"deploy=absent env={len(ENV_TOKEN)}".encode() in daemon.logs(run.id, "default")
    assert b"deploy=absent env=absent" in daemon.logs(run.id, "none")

    sinks: dict[str, bytes] = {"API": _api_answers(daemon, run)}
    for path in sorted((daemon.home / "logs").rglob("*.log")):
        sinks[str(path)] = path.read_bytes()
    for name in ("conveyor.db", "conveyor.db-wal"):
        path = daemon.home / name
        sinks[f"{name} (daemon running)"] = path.read_bytes() if path.exists() else b""
    spans = receiver.wait_for(
        lambda spans: {"RUN leaky", "leaky-report report", "test junit"} <= {s.name for s in spans}
    )
    assert any(s.attributes.get("leaky.token") == "***" for s in spans)
    sinks["spans"] = b"".join(receiver.raw)
    daemon.stop()
    sinks["conveyor.db (stopped)"] = (daemon.home / "conveyor.db").read_bytes()
    sinks["daemon log"] = daemon.log_path.read_bytes()
    assert b"the token is ***" in sinks["daemon log"]
    assert b"printed by a plugin: ***" in sinks["daemon log"]
    assert b"ENV_TOKEN is in stage_env_passthrough and secrets_from_env" in sinks["daemon log"]

    found = {sink: leaks(data) for sink, data in sinks.items() if leaks(data)}
    assert not found, found


def test_a_secret_inline_in_a_pipeline_is_refused_and_not_stored(
    secret_daemon: DaemonProcess, repo_factory: RepoFactory
) -> None:
    daemon = secret_daemon
    inline = f"""name: inline
stages:
  deploy:
    run: ./deploy.sh
    env:
      TOKEN: {json.dumps(DEPLOY_TOKEN)}
      ENCODED: {base64.b64encode(DEPLOY_TOKEN.encode()).decode()}
"""
    repo: GitRepo = repo_factory({"conveyor.yaml": inline})
    with pytest.raises(grpc.RpcError) as caught:
        daemon.submit(repo.path)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = error.details() or ""
    assert (
        "conveyor.yaml:6:14: stages.deploy.env.TOKEN: holds the value of secret DEPLOY_TOKEN;"
        " use secrets: [DEPLOY_TOKEN] instead" in message
    ), message
    assert "stages.deploy.env.ENCODED: holds the value of secret DEPLOY_TOKEN" in message
    assert not leaks(message.encode())
    checked = daemon.stub.ValidatePipeline(
        pipelines_pb2.ValidatePipelineRequest(content=inline, file="conveyor.yaml"), timeout=10
    )
    assert not checked.valid
    assert not leaks(checked.SerializeToString())
    assert daemon.stub.ListRuns(runs_pb2.ListRunsRequest(pipeline="inline")).runs == []
    daemon.stop()
    for name in ("conveyor.db", "conveyor.db-wal"):
        path = daemon.home / name
        assert not path.exists() or not leaks(path.read_bytes())


def test_an_unknown_secret_is_refused_naming_the_stage_file_and_line(
    secret_daemon: DaemonProcess, repo_factory: RepoFactory
) -> None:
    repo: GitRepo = repo_factory(
        {
            "conveyor.yaml": "name: unknown\nstages:\n  deploy:\n    run: ./deploy.sh\n"
            "    secrets: [DEPLOY_TOKEN, DEPLOY_TOKN]\n"
        }
    )
    with pytest.raises(grpc.RpcError) as caught:
        secret_daemon.submit(repo.path)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "conveyor.yaml:5:29: stages.deploy.secrets[1]: stage 'deploy' asks for secret"
        " 'DEPLOY_TOKN', which the daemon does not hold (conveyord secrets list); defined"
        " secrets: DEPLOY_TOKEN, ENV_TOKEN; did you mean 'DEPLOY_TOKEN'?"
    ) in (caught.value.details() or "")


def test_a_secret_set_while_the_daemon_runs_reaches_the_next_run(
    secret_daemon: DaemonProcess, key_file: Path, repo_factory: RepoFactory
) -> None:
    daemon = secret_daemon
    repo: GitRepo = repo_factory(
        {
            "conveyor.yaml": "name: later\nstages:\n  use:\n    secrets: [LATER]\n"
            '    run: printf %s "$LATER" | sha256sum\n'
        }
    )
    conveyord_secrets(daemon.home, key_file, "set", "LATER", value="later-value-1234")
    assert "LATER" in conveyord_secrets(daemon.home, key_file, "list").split()
    deadline = time.monotonic() + 20
    while True:  # the daemon looks at the file about once a second
        try:
            submitted = daemon.submit(repo.path)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "LATER" in (exc.details() or "")
            assert time.monotonic() < deadline, "the new secret never reached the daemon"
            time.sleep(0.2)
    run = daemon.wait(submitted.id)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED, run.reason
    assert hashlib.sha256(b"later-value-1234").hexdigest().encode() in daemon.logs(run.id, "use")
    conveyord_secrets(daemon.home, key_file, "rm", "LATER")
    assert "LATER" not in conveyord_secrets(daemon.home, key_file, "list").split()


def test_the_secrets_file_holds_no_value_in_the_clear(daemon_home: Path, key_file: Path) -> None:
    conveyord_secrets(daemon_home, key_file, "set", "DEPLOY_TOKEN", value=DEPLOY_TOKEN)
    sealed = (daemon_home / "secrets.enc").read_bytes()
    assert not leaks(sealed) and b"DEPLOY_TOKEN" not in sealed
    assert os.stat(daemon_home / "secrets.enc").st_mode & 0o777 == 0o600
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert not key_file.is_relative_to(daemon_home)
