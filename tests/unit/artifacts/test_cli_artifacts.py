"""The CLI's side of artifacts in-process: what it prints (escaped), and its
offline verification of an envelope against a key and the daemon's record."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from conveyor.client import artifacts, render
from conveyor.client.errors import CommandError
from conveyor.client.provenance import VerificationError
from conveyor.daemon.artifacts import provenance, signing
from conveyor.v1 import artifacts_pb2, runs_pb2
from tests.unit.artifacts.test_provenance import DIGEST, facts


@pytest.fixture
def key(tmp_path: Path) -> signing.SigningKey:
    return signing.load_or_create(tmp_path)


def recorded(key: signing.SigningKey, **changes: object) -> artifacts_pb2.Artifact:
    """The artifact message the daemon would send for ``facts()``."""
    f = facts()
    message = artifacts_pb2.Artifact(
        digest=f.digest,
        kind="oci-image",
        name=f.subject_name,
        version=f.version,
        tags=["1.4.0"],
        commit=f.commit,
        pipeline=f.pipeline,
        run_id=f.run_id,
        run_number=f.run_number,
        stage=f.stage,
        reproducible=True,
        provenance=key.sign_statement(provenance.statement(f)),
        key_id=key.key_id,
    )
    for name, value in changes.items():
        setattr(message, name, value)
    return message


def trusted(key: signing.SigningKey) -> artifacts.TrustedKey:
    response = artifacts_pb2.GetSigningKeyResponse(
        key_id=key.key_id, public_key_pem=key.public_pem()
    )
    return artifacts.key_from_daemon(response, "unix:///run/conveyord.sock")


def test_a_faithful_record_verifies(key: signing.SigningKey) -> None:
    artifact = recorded(key)
    verified = artifacts.verify(artifact, trusted(key))
    lines = artifacts.verified_lines(artifact, verified, trusted(key))
    assert lines[0] == f"verified {DIGEST} (127.0.0.1:5000/demo/app): signed by {key.key_id}"
    assert lines[1] == "  trusted key:  the daemon's key as served by unix:///run/conveyord.sock"


@pytest.mark.parametrize(
    ("change", "difference"),
    [
        ({"commit": "d" * 40}, f"commit: signed '{'c' * 40}', the record says '{'d' * 40}'"),
        ({"run_id": "ffff"}, "run: signed '0123456789abcdef', the record says 'ffff'"),
        ({"stage": "push"}, "stage: signed 'build', the record says 'push'"),
        ({"reproducible": False}, "reproducible: signed True, the record says False"),
        ({"name": "other/app"}, "name: signed ['127.0.0.1:5000/demo/app'], the record says"),
        ({"manifest_digest": "sha256:" + "9" * 64}, "is not a subject of the statement"),
    ],
)
def test_a_record_that_disagrees_with_its_statement_fails(
    key: signing.SigningKey, change: dict[str, object], difference: str
) -> None:
    with pytest.raises(VerificationError) as info:
        artifacts.verify(recorded(key, **change), trusted(key))
    assert str(info.value).startswith("the signed statement and the daemon's record differ: ")
    assert difference in str(info.value)


def test_a_changed_statement_or_a_missing_envelope_fails(key: signing.SigningKey) -> None:
    artifact = recorded(key)
    envelope = json.loads(artifact.provenance)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["runDetails"]["builder"]["id"] = "conveyor://elsewhere"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    artifact.provenance = json.dumps(envelope)
    with pytest.raises(VerificationError, match="does not match the statement"):
        artifacts.verify(artifact, trusted(key))
    with pytest.raises(VerificationError, match="holds no provenance"):
        artifacts.verify(recorded(key, provenance=""), trusted(key))


def test_a_key_file_must_be_a_readable_ed25519_public_key(
    key: signing.SigningKey, tmp_path: Path
) -> None:
    good = tmp_path / "good.pem"
    good.write_text(key.public_pem())
    assert artifacts.key_from_file(str(good)).source == f"the key in {good}"
    with pytest.raises(CommandError, match="cannot read"):
        artifacts.key_from_file(str(tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(CommandError, match="not a PEM public key"):
        artifacts.key_from_file(str(bad))


def test_what_the_daemon_sent_is_escaped_in_listings_and_details(key: signing.SigningKey) -> None:
    artifact = recorded(key, name="evil\x1b]0;pwned\x07")
    artifact.tags.append("1.0\x1b[2J")
    artifact.changed_files.append("src/\x1b[31mred.py")
    artifact.reproducible = False
    artifact.stages.add(name="build\x1b[1m")
    text = "\n".join(
        artifacts.artifacts_table([artifact]) + artifacts.artifact_detail(artifact, "ok")
    )
    assert "\x1b" not in text
    assert "evil\\x1b]0;pwned\\x07" in text
    assert "no: tracked files differed from the commit: src/\\x1b[31mred.py" in text


def test_references_and_run_ids_are_told_apart() -> None:
    assert artifacts.looks_like_artifact("sha256:0a360ccc3991")
    assert artifacts.looks_like_artifact("shop.tar.gz:1.4.0")
    assert artifacts.looks_like_artifact("shop@sha256:00")
    assert not artifacts.looks_like_artifact("01a233070038f6535553")
    assert artifacts.short_digest(DIGEST) == "sha256:" + "ab" * 6


def test_show_prints_the_runs_version() -> None:
    run = runs_pb2.Run(id="r", number=1, pipeline="p", version="1.4.0-rc.1+sha.0123456789ab")
    assert "  version:       1.4.0-rc.1+sha.0123456789ab" in render.run_detail(run)
