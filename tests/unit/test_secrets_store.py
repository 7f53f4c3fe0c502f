"""The encrypted secrets file, its key and the daemon's providers (issue 11,
item 5): sealed at rest, keyed outside the home, reloaded on change."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest
import trio

from conveyor.daemon.secrets import providers, store
from conveyor.daemon.secrets.providers import Secrets
from conveyor.daemon.secrets.redaction import redact
from conveyor.daemon.secrets.store import SecretsError


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "secrets.key"
    store.create_key(path)
    return path


def _key(path: Path) -> bytes:
    key = store.load_key(path, {})
    assert key is not None
    return key


def test_a_new_key_file_is_created_private_in_a_private_folder(tmp_path: Path) -> None:
    path = tmp_path / "conveyor" / "secrets.key"
    key = store.create_key(path)
    assert len(key) == store.KEY_BYTES
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert store.load_key(path, {}) == key
    with pytest.raises(SecretsError, match="already exists"):
        store.create_key(path)


def test_a_key_others_may_read_is_refused(key_file: Path) -> None:
    key_file.chmod(0o644)
    with pytest.raises(SecretsError, match=r"may be read by others.*chmod 600"):
        store.load_key(key_file, {})


def test_the_key_from_the_environment_comes_first(key_file: Path) -> None:
    other = os.urandom(store.KEY_BYTES)
    env = {store.KEY_VARIABLE: base64.b64encode(other).decode()}
    assert store.load_key(key_file, env) == other
    with pytest.raises(SecretsError, match="not a secrets key"):
        store.load_key(key_file, {store.KEY_VARIABLE: "short"})


def test_secrets_round_trip_sealed(tmp_path: Path, key_file: Path) -> None:
    path = tmp_path / "secrets.enc"
    store.write_secrets(path, _key(key_file), {"DEPLOY_TOKEN": "value-123456"})
    assert b"value-123456" not in path.read_bytes() and b"DEPLOY_TOKEN" not in path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.read_secrets(path, _key(key_file)) == {"DEPLOY_TOKEN": "value-123456"}
    assert store.read_secrets(tmp_path / "none.enc", None) == {}


def test_a_wrong_key_a_damaged_file_and_no_key_are_told_apart(
    tmp_path: Path, key_file: Path
) -> None:
    path = tmp_path / "secrets.enc"
    store.write_secrets(path, _key(key_file), {"A_B": "value-123456"})
    with pytest.raises(SecretsError, match="cannot be opened with this key"):
        store.read_secrets(path, os.urandom(store.KEY_BYTES))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SecretsError, match="a different key, or a damaged file"):
        store.read_secrets(path, _key(key_file))
    with pytest.raises(SecretsError, match="no key: set secrets_key_file"):
        store.read_secrets(path, None)
    path.write_bytes(b"something else")
    with pytest.raises(SecretsError, match="not a Conveyor secrets file"):
        store.read_secrets(path, _key(key_file))


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("1ABC", "value-1", "invalid secret name"),
        ("A-B", "value-1", "invalid secret name"),
        ("CONVEYOR_TOKEN", "value-1", "Conveyor's own"),
        ("TOKEN", "abc", "shorter than 4"),
        ("TOKEN", "a\0bcd", "NUL"),
    ],
)
def test_bad_names_and_values_are_refused(name: str, value: str, problem: str) -> None:
    with pytest.raises(SecretsError, match=problem):
        store.check_value(store.check_name(name), value)


def test_the_environment_provider_gives_the_variables_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {"ENV_TOKEN": "from-the-environment", "SHORT": "ab"}
    with caplog.at_level(logging.WARNING):
        secrets = Secrets(from_env=["ENV_TOKEN", "SHORT", "MISSING"], environ=environ)
    assert secrets.names() == {"ENV_TOKEN"}
    assert secrets.values(["ENV_TOKEN", "MISSING"]) == (
        {"ENV_TOKEN": "from-the-environment"},
        ["MISSING"],
    )
    assert "MISSING is not set" in caplog.text and "shorter than 4" in caplog.text
    assert "from-the-environment" not in caplog.text
    assert redact("x from-the-environment y") == "x *** y"


async def test_the_file_is_reloaded_when_it_changes(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(providers, "WATCH_INTERVAL", 0.01)
    path = tmp_path / "secrets.enc"
    secrets = Secrets(file=path, key_file=key_file)
    assert not await trio.to_thread.run_sync(secrets.load)
    first = secrets.generation
    async with trio.open_nursery() as nursery:
        await nursery.start(secrets.watch)
        reloaded = secrets.reloaded
        store.write_secrets(path, _key(key_file), {"LATER": "later-value"})
        with trio.fail_after(10):
            await reloaded.wait()
        nursery.cancel_scope.cancel()
    assert secrets.names() == {"LATER"}
    assert secrets.generation > first
    assert secrets.catalog().holder("use later-value here") == "LATER"
    assert secrets.masker(["LATER"]).mask(b"later-value") == b"***"
    assert not secrets.masker(["OTHER"])


async def test_a_file_that_cannot_be_read_keeps_the_secrets_loaded(
    tmp_path: Path, key_file: Path
) -> None:
    path = tmp_path / "secrets.enc"
    store.write_secrets(path, _key(key_file), {"KEPT": "kept-value"})
    secrets = Secrets(file=path, key_file=key_file)
    await trio.to_thread.run_sync(secrets.load)
    path.write_bytes(b"garbage")
    with pytest.raises(SecretsError):
        await trio.to_thread.run_sync(secrets.load)
    assert secrets.values(["KEPT"])[0] == {"KEPT": "kept-value"}
