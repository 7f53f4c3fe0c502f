"""The recipe of docs/artifacts.md that checks provenance with standard
tools (jq, base64, openssl) works as printed on an envelope the daemon's
key signed, and fails on a tampered one."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conveyor.daemon.artifacts import provenance, signing
from tests.unit.artifacts.test_provenance import DIGEST, facts

DOC = Path(__file__).resolve().parents[3] / "docs" / "artifacts.md"

pytestmark = pytest.mark.skipif(
    not (shutil.which("jq") and shutil.which("openssl")), reason="needs jq and openssl"
)


def recipe() -> str:
    section = DOC.read_text().split("### Check it with standard tools", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert match is not None, "no sh block under 'Check it with standard tools'"
    return match.group(1)


def run_recipe(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", recipe()], cwd=folder, capture_output=True, text=True, check=False
    )


def test_the_documented_recipe_verifies_and_names_the_digest(tmp_path: Path) -> None:
    key = signing.load_or_create(tmp_path)
    (tmp_path / "envelope.json").write_text(key.sign_statement(provenance.statement(facts())))
    (tmp_path / "key.pem").write_text(key.public_pem())
    result = run_recipe(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Signature Verified Successfully" in result.stdout
    assert result.stdout.splitlines()[-1] == DIGEST.removeprefix("sha256:")


def test_the_documented_recipe_fails_on_a_tampered_statement(tmp_path: Path) -> None:
    key = signing.load_or_create(tmp_path)
    envelope = json.loads(key.sign_statement(provenance.statement(facts())))
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "ef" * 32
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (tmp_path / "envelope.json").write_text(json.dumps(envelope))
    (tmp_path / "key.pem").write_text(key.public_pem())
    result = run_recipe(tmp_path)
    assert result.returncode != 0
    assert "Signature Verified Successfully" not in result.stdout
