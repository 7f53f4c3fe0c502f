"""Artifacts end to end: a real daemon over real gRPC, real git repositories,
the ``file`` kind, the CLI, an OTLP receiver and a lifecycle plugin.

The tests share one daemon: each uses pipeline and file names of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from conveyor.client import cli
from conveyor.client.provenance import key_id, load_public_key
from conveyor.daemon.artifacts import signing
from conveyor.v1 import artifacts_pb2, runs_pb2
from tests.support.daemon import DaemonProcess, stage
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.plugins import write_distribution
from tests.support.projects import FIXED_BY_RUFF, ruff, shop_project
from tests.support.repos import GitRepo, git

OBSERVER = """
import json
import os

from conveyor.plugin import hookimpl


def _write(record):
    with open(os.environ["ARTIFACT_EVENTS"], "a") as events:
        events.write(json.dumps(record) + "\\n")


@hookimpl
def conveyor_artifact_produced(run, artifact):
    _write({
        "hook": "artifact_produced",
        "run": run.id,
        "digest": artifact.digest,
        "version": artifact.version,
        "tags": list(artifact.tags),
        "stages": [s.name for s in artifact.stages],
        "signed": artifact.provenance.startswith("{"),
    })


@hookimpl
def conveyor_run_finished(run):
    _write({"hook": "run_finished", "run": run.id, "version": run.version})
"""

WAIT = 30.0


@dataclass
class Env:
    daemon: DaemonProcess
    receiver: OtlpReceiver
    events: Path
    scratch: Path

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        """``conveyor ARGS`` in-process, against the daemon."""
        code = cli.main(["--address", self.daemon.address, *args])
        out, err = capsys.readouterr()
        return code, out, err

    def hook_calls(self, run_id: str) -> list[dict[str, Any]]:
        """The plugin's notifications about the run, once its run_finished
        (delivered after everything the run announced) has arrived."""
        deadline = time.monotonic() + WAIT
        while True:
            lines = self.events.read_text().splitlines() if self.events.exists() else []
            records = [json.loads(line) for line in lines]
            mine = [r for r in records if r["run"] == run_id]
            if any(r["hook"] == "run_finished" for r in mine):
                return mine
            assert time.monotonic() < deadline, f"no run_finished for {run_id}"
            time.sleep(0.02)

    def artifact(self, reference: str) -> artifacts_pb2.Artifact:
        return self.daemon.stub.GetArtifact(
            artifacts_pb2.GetArtifactRequest(artifact=reference), timeout=10
        )

    def run(self, repo: GitRepo) -> runs_pb2.Run:
        return self.daemon.wait(self.daemon.submit(repo.path).id)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    scratch = Path(tempfile.mkdtemp(prefix="cva-", dir="/tmp"))
    receiver = OtlpReceiver().start()
    site = scratch / "site"
    write_distribution(
        site, "artifact-observer", {"artifact_observer": "artifact_observer"},
        {"artifact_observer": OBSERVER},
    )  # fmt: skip
    events = scratch / "events.jsonl"
    daemon = DaemonProcess(
        scratch / "home",
        args=["--kill-grace", "1"],
        env={
            "PYTHONPATH": str(site),
            "ARTIFACT_EVENTS": str(events),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    ).start()
    try:
        yield Env(daemon, receiver, events, scratch)
    finally:
        daemon.stop()
        receiver.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def release_pipeline(name: str, content: str, extra: str = "") -> str:
    return f"""\
name: {name}
version: 9.9.9
stages:
  test:
    run: echo "building $CONVEYOR_VERSION"
  package:
    uses: file
    needs: test
{extra}    run:
      - mkdir -p dist
      - printf '%s' "{content}" > dist/{name}.txt
    with:
      path: dist/*.txt
"""


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- recording, versions, provenance -------------------------------------------------


def test_a_tagged_commit_builds_a_file_artifact_with_signed_verifiable_provenance(
    env: Env, repo_factory: Callable[..., GitRepo], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repo_factory({"conveyor.yaml": release_pipeline("release", "release bytes")})
    git("tag", "v1.2.3", cwd=repo.path)
    run = env.run(repo)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED, [s.reason for s in run.stages]
    assert run.version == "1.2.3"  # the tag wins over version: 9.9.9
    assert b"\nbuilding 1.2.3\n" in env.daemon.logs(run.id, "test")

    artifact = env.artifact("release.txt:1.2.3")
    digest = sha256(b"release bytes")
    assert (artifact.digest, artifact.kind, artifact.version, list(artifact.tags)) == (
        digest,
        "file",
        "1.2.3",
        ["1.2.3"],
    )
    assert (artifact.commit, artifact.run_id, artifact.stage) == (run.commit, run.id, "package")
    assert [s.name for s in artifact.stages] == ["test", "package"]
    assert artifact.reproducible and artifact.size == len(b"release bytes")
    stored = Path(artifact.attributes["stored_at"])
    assert stored == env.daemon.home / "artifacts" / "sha256" / digest.removeprefix("sha256:")
    assert stored.read_bytes() == b"release bytes"

    key = env.daemon.stub.GetSigningKey(artifacts_pb2.GetSigningKeyRequest(), timeout=10)
    home_key = signing.load_or_create(env.daemon.home)
    assert key.algorithm == "ed25519"
    assert key.key_id == home_key.key_id == artifact.key_id
    assert key_id(load_public_key(key.public_key_pem)) == key.key_id

    code, out, _ = env.cli(capsys, "artifacts", "verify", digest)
    assert code == 0
    assert out.startswith(f"verified {digest} (release.txt): signed by {key.key_id}\n")
    assert "trusted key:  the daemon's key as served by unix://" in out
    assert f"commit {run.commit}" in out
    assert "reproducible from the commit: yes" in out

    pem = env.scratch / "release-key.pem"
    pem.write_text(key.public_key_pem)
    code, out, _ = env.cli(capsys, "artifacts", "verify", "release.txt:1.2.3", "--key", str(pem))
    assert code == 0
    assert f"trusted key:  the key in {pem}" in out

    code, out, _ = env.cli(capsys, "artifacts", "show", digest[:19])
    assert code == 0
    assert "provenance:    signed by" in out and "verifies with the daemon's key" in out
    assert "version:       1.2.3" in out

    listing = env.daemon.stub.ListArtifacts(
        artifacts_pb2.ListArtifactsRequest(pipeline="release"), timeout=10
    )
    assert [a.digest for a in listing.artifacts] == [digest]
    assert listing.artifacts[0].provenance == ""  # listings leave the envelope out

    calls = env.hook_calls(run.id)
    assert calls[0] == {
        "hook": "artifact_produced",
        "run": run.id,
        "digest": digest,
        "version": "1.2.3",
        "tags": ["1.2.3"],
        "stages": ["test", "package"],
        "signed": True,
    }
    assert calls[-1] == {"hook": "run_finished", "run": run.id, "version": "1.2.3"}


def test_an_untagged_commit_builds_the_base_version_with_the_run_number(
    env: Env, repo_factory: Callable[..., GitRepo]
) -> None:
    repo = repo_factory({"conveyor.yaml": release_pipeline("nightly", "same bytes")})
    first = env.run(repo)
    second = env.run(repo)
    versions = [f"9.9.9-rc.{run.number}+sha.{run.commit[:12]}" for run in (first, second)]
    assert [first.version, second.version] == versions
    # the same bytes again: the same artifact, built once, named by both versions
    artifact = env.artifact(sha256(b"same bytes"))
    assert (artifact.version, artifact.run_id) == (versions[0], first.id)
    assert list(artifact.tags) == versions
    assert [c["hook"] for c in env.hook_calls(second.id)] == ["artifact_produced", "run_finished"]


def test_a_rerun_with_unchanged_inputs_reuses_the_artifact_without_building(
    env: Env, repo_factory: Callable[..., GitRepo]
) -> None:
    counter = env.scratch / "cached-builds"
    pipeline = release_pipeline(
        "cached", "cached bytes", extra="    inputs: [src, conveyor.yaml]\n"
    ).replace(
        "      - mkdir -p dist\n", f"      - mkdir -p dist\n      - echo built >> {counter}\n"
    )
    # a later stage uses the file the build made: on a cache hit it is put back
    pipeline += "  use:\n    needs: package\n    run: cat dist/cached.txt\n"
    repo = repo_factory({"conveyor.yaml": pipeline, "src/app.py": "print(1)\n"})
    first = env.run(repo)
    second = env.run(repo)
    assert second.status == runs_pb2.RUN_STATUS_SUCCEEDED
    assert env.daemon.logs(second.id, "use").endswith(b"cached bytes")
    digest = sha256(b"cached bytes")
    assert stage(second, "package").reason == f"cache hit: {digest} from run #{first.number}"
    assert counter.read_text() == "built\n", "the cache hit ran the build commands"
    artifact = env.artifact(digest)
    assert [(h.run_id, h.stage) for h in artifact.cache_hits] == [(second.id, "package")]
    assert artifact.cache_key.startswith("sha256:")
    # a cache hit announces nothing: the artifact was announced when it was built
    assert [c["hook"] for c in env.hook_calls(second.id)] == ["run_finished"]
    assert b"the stage's work is skipped" in env.daemon.logs(second.id, "package")

    repo.commit({"src/app.py": "print(2)\n"})
    env.run(repo)
    assert counter.read_text() == "built\nbuilt\n", "a changed input did not rebuild"


def test_moving_a_tag_to_other_bytes_is_refused_unless_the_stage_allows_it(
    env: Env, repo_factory: Callable[..., GitRepo]
) -> None:
    pipeline = release_pipeline("moving", "$CONVEYOR_RUN_ID")
    repo = repo_factory({"conveyor.yaml": pipeline})
    git("tag", "v3.0.0", cwd=repo.path)
    first = env.run(repo)
    original = env.artifact("moving.txt:3.0.0")
    refused = env.run(repo)
    package = stage(refused, "package")
    assert package.status == runs_pb2.STAGE_STATUS_FAILED
    assert package.reason.startswith(
        f"tag moving.txt:3.0.0 already names {original.digest} (recorded by run"
        f" #{first.number}); refusing to move it to sha256:"
    )
    assert "set overwrite_tags: true on the stage" in package.reason
    # nothing changed: the tag still names the first build, no other artifact exists
    assert env.artifact("moving.txt:3.0.0").digest == original.digest
    listing = env.daemon.stub.ListArtifacts(
        artifacts_pb2.ListArtifactsRequest(name="moving.txt"), timeout=10
    )
    assert [a.digest for a in listing.artifacts] == [original.digest]

    repo.commit(
        {
            "conveyor.yaml": release_pipeline(
                "moving", "$CONVEYOR_RUN_ID", extra="    overwrite_tags: true\n"
            )
        }
    )
    git("tag", "-f", "v3.0.0", cwd=repo.path)
    allowed = env.run(repo)
    assert allowed.status == runs_pb2.RUN_STATUS_SUCCEEDED
    moved = env.artifact("moving.txt:3.0.0")
    assert moved.digest == sha256(allowed.id.encode())
    assert list(env.artifact(original.digest).tags) == []


# -- telemetry and conveyor trace ---------------------------------------------------


def _spans_of(receiver: OtlpReceiver, run_id: str, count: int) -> list[ReceivedSpan]:
    def mine(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.attributes.get("cicd.pipeline.run.id") == run_id]

    return mine(receiver.wait_for(lambda spans: len(mine(spans)) >= count))


def test_the_stage_span_carries_the_artifact_and_trace_prints_the_same_trace(
    env: Env, repo_factory: Callable[..., GitRepo], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repo_factory({"conveyor.yaml": release_pipeline("traced", "traced bytes")})
    git("tag", "v0.4.0", cwd=repo.path)
    run = env.run(repo)
    digest = sha256(b"traced bytes")
    artifact = env.artifact(digest)
    spans = {s.name: s for s in _spans_of(env.receiver, run.id, 3)}
    package = spans["file package"].attributes
    assert package["artifact.hash"] == digest
    assert package["artifact.version"] == "0.4.0"
    assert package["artifact.filename"] == "traced.txt"
    assert package["artifact.attestation.hash"] == sha256(artifact.provenance.encode())
    assert package["conveyor.artifact.signing_key"] == artifact.key_id
    assert package["conveyor.artifact.reproducible"] is True
    assert spans["RUN traced"].attributes["conveyor.run.version"] == "0.4.0"
    assert {s.trace_id for s in spans.values()} == {run.trace_id}

    code, out, _ = env.cli(capsys, "trace", digest[:20])
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"artifact {digest}  traced.txt  version 0.4.0  tags 0.4.0"
    assert lines[1] == f"  commit {run.commit}, built by stage package of run {run.id}"
    assert lines[2] == f"  trace  {run.trace_id}"
    assert f"  trace  {run.trace_id}  (run span {run.span_id})" in lines
    assert any(line.startswith("package  succeeded") for line in lines)
    code, out, _ = env.cli(capsys, "--output", "json", "trace", "traced.txt:0.4.0")
    assert json.loads(out)["run"]["trace_id"] == run.trace_id


# -- tampering ---------------------------------------------------------------------------


def test_verify_names_what_differs_in_a_tampered_record(
    env: Env, repo_factory: Callable[..., GitRepo], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repo_factory({"conveyor.yaml": release_pipeline("tampered", "tampered bytes")})
    repo.commit({"README.md": "other\n"})
    env.run(repo)
    digest = sha256(b"tampered bytes")
    envelope = env.artifact(digest).provenance

    def store(column: str, value: str) -> None:
        with sqlite3.connect(env.daemon.home / "conveyor.db", timeout=30) as conn:
            conn.execute(f"UPDATE artifacts SET {column} = ? WHERE digest = ?", (value, digest))

    # a statement changed after signing: the commit it names
    data = json.loads(envelope)
    statement = json.loads(base64.b64decode(data["payload"]))
    dependency = statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    dependency["digest"]["gitCommit"] = "0" * 40
    data["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    store("provenance", json.dumps(data))
    code, _, err = env.cli(capsys, "artifacts", "verify", digest)
    assert code == 1
    assert f"{digest} does not verify: the signature by " in err
    assert "does not match the statement (the statement or the signature was changed)" in err

    # a genuine envelope of another artifact: the digest does not match
    other_repo = repo_factory({"conveyor.yaml": release_pipeline("tampered2", "other bytes")})
    env.run(other_repo)
    store("provenance", env.artifact(sha256(b"other bytes")).provenance)
    code, _, err = env.cli(capsys, "artifacts", "verify", digest)
    assert code == 1
    assert f"the statement's subject digest is {sha256(b'other bytes')}, not {digest}" in err

    # the envelope is intact but the record says another commit
    store("provenance", envelope)
    store("commit_sha", "f" * 40)
    code, _, err = env.cli(capsys, "artifacts", "verify", digest)
    assert code == 1
    assert "the signed statement and the daemon's record differ: commit: signed '" in err
    assert f"the record says '{'f' * 40}'" in err
    code, out, _ = env.cli(capsys, "artifacts", "show", digest)
    assert "DOES NOT VERIFY with the daemon's key" in out
    store("commit_sha", git("rev-parse", "HEAD", cwd=repo.path))

    # another key: not the one that signed it
    (env.scratch / "stranger").mkdir()
    stranger = signing.load_or_create(env.scratch / "stranger")
    pem = env.scratch / "stranger.pem"
    pem.write_text(stranger.public_pem())
    code, _, err = env.cli(capsys, "artifacts", "verify", digest, "--key", str(pem))
    assert code == 1
    assert f"not by the expected key {stranger.key_id}" in err
    assert f"(trusted key: the key in {pem})" in err
    assert env.cli(capsys, "artifacts", "verify", digest)[0] == 0


# -- the workspace equals the commit (issue 8, item 1) -----------------------------------

EARLIER = """\
name: shop-{variant}
version: 0.3.0
stages:
  lint:
    run: {ruff} check --no-cache src tests
  package:
    uses: file
    needs: lint
{extra}    run:
      - mkdir -p dist
      - tar -czf dist/shop.tar.gz src pyproject.toml
    with:
      path: dist/shop.tar.gz
"""

PARALLEL = """\
name: shop-parallel
version: 0.3.0
env:
  SIGNALS: {signals}
stages:
  lint:
    timeout: 30s
    run:
      - until [ -e "$SIGNALS/packaging" ]; do sleep 0.01; done
      - {ruff} check --no-cache src tests
      - touch "$SIGNALS/edited"
  package:
    uses: file
    timeout: 30s
    run:
      - touch "$SIGNALS/packaging"
      - until [ -e "$SIGNALS/edited" ]; do sleep 0.01; done
      - mkdir -p dist
      - tar -czf dist/shop.tar.gz src pyproject.toml
    with:
      path: dist/shop.tar.gz
"""


def test_a_stage_that_changed_the_checkout_before_the_build_fails_it(
    env: Env, tmp_path: Path
) -> None:
    repo = shop_project(tmp_path / "shop", EARLIER.format(variant="earlier", ruff=ruff(), extra=""))
    run = env.run(repo)
    assert stage(run, "lint").status == runs_pb2.STAGE_STATUS_SUCCEEDED
    package = stage(run, "package")
    assert package.status == runs_pb2.STAGE_STATUS_FAILED
    assert package.reason == (
        f"1 tracked file differs from commit {run.commit[:12]} before the stage (changed by an"
        f" earlier or parallel stage): {FIXED_BY_RUFF}"
    )
    log = env.daemon.logs(run.id, "package").decode()
    assert FIXED_BY_RUFF in log and "a build must package the commit" in log
    assert b"tar -czf" not in env.daemon.logs(run.id, "package")  # the build never ran
    listing = env.daemon.stub.ListArtifacts(
        artifacts_pb2.ListArtifactsRequest(pipeline="shop-earlier"), timeout=10
    )
    assert list(listing.artifacts) == []


def test_a_parallel_stage_changing_the_checkout_during_the_build_fails_it(
    env: Env, tmp_path: Path
) -> None:
    signals = tmp_path / "signals"
    signals.mkdir()
    repo = shop_project(tmp_path / "shop", PARALLEL.format(signals=signals, ruff=ruff()))
    run = env.run(repo)
    package = stage(run, "package")
    assert package.status == runs_pb2.STAGE_STATUS_FAILED
    assert package.reason == (
        f"1 tracked file differs from commit {run.commit[:12]} after the stage (changed while"
        f" the stage ran, by it or a parallel stage): {FIXED_BY_RUFF}"
    )


def test_allow_dirty_builds_and_records_the_changed_files_in_the_provenance(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = EARLIER.format(variant="dirty", ruff=ruff(), extra="    allow_dirty: true\n")
    repo = shop_project(tmp_path / "shop", pipeline)
    run = env.run(repo)
    assert run.status == runs_pb2.RUN_STATUS_SUCCEEDED
    (artifact,) = env.daemon.stub.ListArtifacts(
        artifacts_pb2.ListArtifactsRequest(pipeline="shop-dirty"), timeout=10
    ).artifacts
    assert (artifact.reproducible, list(artifact.changed_files)) == (False, [FIXED_BY_RUFF])
    code, out, _ = env.cli(capsys, "artifacts", "verify", "shop.tar.gz:" + run.version)
    assert code == 0
    assert "reproducible from the commit: no" in out
    code, out, _ = env.cli(capsys, "artifacts", "show", artifact.digest)
    assert f"no: tracked files differed from the commit: {FIXED_BY_RUFF}" in out
    statement = json.loads(
        base64.b64decode(json.loads(env.artifact(artifact.digest).provenance)["payload"])
    )
    assert statement["predicate"]["buildDefinition"]["internalParameters"]["changedFiles"] == [
        FIXED_BY_RUFF
    ]


# -- bad requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "code", "message"),
    [
        ("sha256:" + "0" * 64, grpc.StatusCode.NOT_FOUND, "no artifact sha256:000"),
        ("nothing.txt:1.0.0", grpc.StatusCode.NOT_FOUND, "no artifact is tagged nothing.txt:1.0.0"),
        ("sha256:xyz", grpc.StatusCode.INVALID_ARGUMENT, "a digest is sha256: and 64"),
        ("plain", grpc.StatusCode.INVALID_ARGUMENT, "is not a reference: expected sha256:"),
        (
            "a" * 600,
            grpc.StatusCode.INVALID_ARGUMENT,
            "artifact is 600 bytes long; the limit is 512",
        ),
    ],
)
def test_get_artifact_says_what_is_wrong_with_a_reference(
    env: Env, reference: str, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        env.artifact(reference)
    assert info.value.code() == code
    assert message in (info.value.details() or "")


def test_cli_errors_for_unknown_artifacts_exit_1(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = env.cli(capsys, "artifacts", "show", "nothing.txt:1")
    assert (code, err) == (1, "conveyor: error: no artifact is tagged nothing.txt:1\n")
    code, _, err = env.cli(capsys, "artifacts", "ls", "--commit", "xyz")
    assert code == 1 and "commit must be 4 to 40 lowercase hex digits" in err
    assert env.cli(capsys, "artifacts", "verify", "x:1", "--key", "/nonexistent.pem")[0] == 1


# -- the signing key ------------------------------------------------------------------------


def test_a_signing_key_others_can_read_stops_the_daemon_saying_why(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    signing.load_or_create(home)
    (home / signing.KEY_FILE).chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "conveyor.daemon.main", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"conveyord: SigningKeyError: {home / signing.KEY_FILE} is readable by others (mode 644);"
        " chmod 600 it, or remove it to make a new key (earlier provenance then no longer"
        " verifies with the new key)"
    )
