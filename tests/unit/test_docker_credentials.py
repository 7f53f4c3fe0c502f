"""The ``registry_credentials`` setting: registry logins the daemon holds for
push stages, their passwords read from files when the configuration loads,
never shown, and every mistake named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.daemon.config import ConfigError, flag_overrides, load_config
from conveyor.daemon.main import _parser

HOME = {"CONVEYOR_HOME": "/nonexistent/conveyor-home"}


def password_file(tmp_path: Path, text: str = "s3cret\n") -> Path:
    path = tmp_path / "registry.password"
    path.write_text(text)
    path.chmod(0o600)
    return path


def config_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "conveyord.toml"
    path.write_text(body)
    return path


def refused(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(**kwargs)  # type: ignore[arg-type]
    return str(err.value)


def test_a_login_from_the_config_file_reads_its_password_file(tmp_path: Path) -> None:
    secret = password_file(tmp_path)
    path = config_file(
        tmp_path,
        "[registry_credentials.ci]\n"
        'registry = "127.0.0.1:5001"\n'
        'username = "ci"\n'
        f'password_file = "{secret}"\n',
    )
    config = load_config(path=path, environ=HOME)
    login = config.registry_credential("ci")
    assert login is not None
    assert (login.registry, login.username, login.password) == ("127.0.0.1:5001", "ci", "s3cret")
    assert config.registry_credential("other") is None
    assert "s3cret" not in repr(config) and "s3cret" not in repr(login)
    # Read once, when the configuration loaded: later changes need a restart.
    secret.write_text("changed\n")
    again = config.registry_credential("ci")
    assert again is not None and again.password == "s3cret"


def test_logins_can_come_from_the_environment_and_flags_as_json(tmp_path: Path) -> None:
    secret = password_file(tmp_path, "from-env")
    table = {"hub": {"registry": "docker.io", "username": "me", "password_file": str(secret)}}
    config = load_config(environ={**HOME, "CONVEYOR_REGISTRY_CREDENTIALS": json.dumps(table)})
    login = config.registry_credential("hub")
    assert login is not None and login.password == "from-env"
    args = _parser().parse_args(["--registry-credentials", json.dumps(table)])
    config = load_config(environ=HOME, overrides=flag_overrides(args))
    assert config.registry_credential("hub") is not None


def test_there_are_no_logins_by_default() -> None:
    config = load_config(environ=HOME)
    assert config.registry_credentials == {}
    assert config.registry_credential("ci") is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"registry": "r", "username": "u", "password_file": "/nonexistent/pw"},
            "registry_credentials.ci: cannot read password_file /nonexistent/pw: No such file"
            " or directory",
        ),
        (
            {"registry": "r", "username": "u", "password_file": "relative/pw"},
            "registry_credentials.ci.password_file: 'relative/pw': give an absolute path",
        ),
        (
            {"registry": "r", "username": "u", "password": "hunter2"},
            "registry_credentials.ci: a password is never written in the configuration: put it"
            " in a file only the daemon's user can read and name that file in password_file",
        ),
        (
            {"registry": "r", "password_file": "/x"},
            "registry_credentials.ci.username: Field required",
        ),
        (
            {"registry": "r", "username": "u", "password_file": "/x", "email": "e"},
            "registry_credentials.ci.email: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_login_is_refused_with_what_is_wrong(
    tmp_path: Path, entry: dict[str, str], expected: str
) -> None:
    environ = {**HOME, "CONVEYOR_REGISTRY_CREDENTIALS": json.dumps({"ci": entry})}
    message = refused(environ=environ)
    assert message.startswith(expected), message
    assert message.endswith("(from environment variable CONVEYOR_REGISTRY_CREDENTIALS)")
    assert "hunter2" not in message


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    secret = password_file(tmp_path, "\n")
    path = config_file(
        tmp_path,
        f'[registry_credentials.ci]\nregistry = "r"\nusername = "u"\npassword_file = "{secret}"\n',
    )
    assert refused(path=path, environ=HOME) == (
        f"registry_credentials.ci: password_file {secret} is empty (in {path})"
    )


def test_bad_names_and_shapes_are_refused(tmp_path: Path) -> None:
    path = config_file(tmp_path, 'registry_credentials = "ci"\n')
    assert refused(path=path, environ=HOME) == (
        f"registry_credentials: invalid value 'ci' in {path}; expected a table of"
        " NAME = {registry, username, password_file}"
    )
    environ = {**HOME, "CONVEYOR_REGISTRY_CREDENTIALS": '{"a b": {}}'}
    assert refused(environ=environ) == (
        "registry_credentials: 'a b' is not a name (letters, digits, _, . and -, at most 100)"
        " (from environment variable CONVEYOR_REGISTRY_CREDENTIALS)"
    )
    environ = {**HOME, "CONVEYOR_REGISTRY_CREDENTIALS": "ci=me"}
    assert refused(environ=environ) == (
        "registry_credentials: invalid value 'ci=me' from environment variable"
        " CONVEYOR_REGISTRY_CREDENTIALS; expected a table of NAME = {registry, username,"
        " password_file} written as JSON"
    )
