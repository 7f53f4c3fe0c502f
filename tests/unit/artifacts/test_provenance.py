"""Provenance statements signed by the daemon's key, verified offline."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from conveyor.client.provenance import (
    VerificationError,
    load_public_key,
    verify_envelope,
)
from conveyor.daemon.artifacts import provenance, signing

DIGEST = "sha256:" + "ab" * 32


def facts(**changes: object) -> provenance.BuildFacts:
    values: dict[str, object] = {
        "subject_name": "127.0.0.1:5000/demo/app",
        "digest": DIGEST,
        "repository": "/srv/git/app",
        "ref": "refs/heads/main",
        "commit": "c" * 40,
        "pipeline": "app",
        "run_id": "0123456789abcdef",
        "run_number": 4,
        "stage": "build",
        "stage_kind": "build",
        "parameters": {"context": ".", "dockerfile": "Dockerfile"},
        "started_at": 1_700_000_000.0,
        "finished_at": 1_700_000_012.5,
        "builder_id": "conveyor://ci-1/root/.conveyor",
        "builder_version": "0.1.0",
        "version": "1.4.0-rc.4+sha.cccccccccccc",
    }
    values.update(changes)
    return provenance.BuildFacts(**values)  # type: ignore[arg-type]


def test_the_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    key = signing.load_or_create(tmp_path)
    path = tmp_path / signing.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.load_or_create(tmp_path).key_id == key.key_id


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    signing.load_or_create(tmp_path)
    os.chmod(tmp_path / signing.KEY_FILE, 0o644)
    with pytest.raises(signing.SigningKeyError, match="readable by others"):
        signing.load_or_create(tmp_path)


def test_a_signed_statement_verifies_and_says_what_was_built(tmp_path: Path) -> None:
    key = signing.load_or_create(tmp_path)
    envelope = key.sign_statement(provenance.statement(facts()))
    verified = verify_envelope(envelope, load_public_key(key.public_pem()), subject_digest=DIGEST)
    assert verified.key_id == key.key_id
    definition = verified.predicate["buildDefinition"]
    assert definition["resolvedDependencies"] == [
        {"uri": "git+file:///srv/git/app@refs/heads/main", "digest": {"gitCommit": "c" * 40}}
    ]
    assert definition["internalParameters"]["reproducibleFromCommit"] is True
    details = verified.predicate["runDetails"]
    assert details["metadata"] == {
        "invocationId": "0123456789abcdef",
        "startedOn": "2023-11-14T22:13:20.000Z",
        "finishedOn": "2023-11-14T22:13:32.500Z",
    }


def test_a_dirty_build_records_its_changed_files(tmp_path: Path) -> None:
    statement = provenance.statement(facts(changed_files=("src/app.py",)))
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["reproducibleFromCommit"] is False
    assert internal["changedFiles"] == ["src/app.py"]


def _tamper(envelope: str) -> str:
    data = json.loads(envelope)
    statement = json.loads(base64.b64decode(data["payload"]))
    statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"] = {
        "gitCommit": "d" * 40
    }
    data["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(data)


def test_verification_names_what_differs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    key = signing.load_or_create(tmp_path / "a")
    other = signing.load_or_create(tmp_path / "b")
    envelope = key.sign_statement(provenance.statement(facts()))
    public = load_public_key(key.public_pem())
    with pytest.raises(VerificationError, match="does not match the statement"):
        verify_envelope(_tamper(envelope), public, subject_digest=DIGEST)
    with pytest.raises(VerificationError, match="not by the expected key"):
        verify_envelope(envelope, load_public_key(other.public_pem()), subject_digest=DIGEST)
    with pytest.raises(VerificationError, match="subject digest"):
        verify_envelope(envelope, public, subject_digest="sha256:" + "ef" * 32)
    with pytest.raises(VerificationError, match="not JSON"):
        verify_envelope("{", public, subject_digest=DIGEST)
