"""Daemon settings: every bad value, from each source, is refused with the
key, the source and what was expected; precedence defaults < file < env < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.daemon.config import ConfigError, flag_overrides, load_config
from conveyor.daemon.main import _parser


def from_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conveyord.toml"
    path.write_text(text)
    return path


def flags(*argv: str) -> dict[str, object]:
    return flag_overrides(_parser().parse_args(list(argv)))


def refused(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(**kwargs)  # type: ignore[arg-type]
    return str(err.value)


HOME = {"CONVEYOR_HOME": "/nonexistent/conveyor-home"}

# (key, TOML value, expected words): values of the wrong type in the file.
BAD_FILE_VALUES = [
    ("max_concurrent_runs", "2.9", "an integer of at least 1"),
    ("max_concurrent_runs", "true", "an integer of at least 1"),
    ("max_concurrent_runs", "0", "an integer of at least 1"),
    ("max_concurrent_runs", '"4"', "an integer of at least 1"),
    ("keep_workspaces", '"yes"', "true or false"),
    ("keep_workspaces", "1", "true or false"),
    ("kill_grace", "-1", "a finite number of at least 0"),
    ("kill_grace", "inf", "a finite number of at least 0"),
    ("kill_grace", '"5s"', "a finite number of at least 0"),
    ("hook_timeout", "0", "a finite number greater than 0"),
    ("grpc_workers", "1", "an integer of at least 2"),
    ("shutdown_mode", '"stop"', "one of 'cancel', 'finish'"),
    ("log_level", '"INFO"', "one of 'debug', 'info', 'warning', 'error'"),
    ("telemetry_exporter", '"zipkin"', "one of '', 'otlp', 'console', 'none'"),
    ("listen", '"127.0.0.1:7474"', "a list of strings"),
    ("stage_env_passthrough", "[1, 2]", "a list of strings"),
    ("otlp_endpoint", "4317", "a string"),
    ("max_stages", "0", "an integer of at least 1"),
    ("max_needs", "1.5", "an integer of at least 1"),
    ("max_diagnostics", "-3", "an integer of at least 1"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_FILE_VALUES)
def test_a_bad_value_in_the_file_names_key_file_and_type(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    path = from_file(tmp_path, f"{key} = {value}\n")
    message = refused(path=path, environ=HOME)
    assert message.startswith(f"{key}: invalid value ")
    assert f"in {path}" in message
    assert f"expected {expected}" in message


# (key, text, expected words): text from the environment or a flag.
BAD_TEXT_VALUES = [
    ("keep_workspaces", "ture", "true or false (or 1/0, yes/no, on/off)"),
    ("max_concurrent_runs", "2.9", "an integer of at least 1"),
    ("max_concurrent_runs", "many", "an integer of at least 1"),
    ("max_concurrent_runs", "0", "an integer of at least 1"),
    ("kill_grace", "nan", "a finite number of at least 0"),
    ("kill_grace", "5s", "a finite number of at least 0"),
    ("shutdown_timeout", "-1", "a finite number of at least 0"),
    ("hook_timeout", "0", "a finite number greater than 0"),
    ("shutdown_mode", "stop", "one of 'cancel', 'finish'"),
    ("log_level", "verbose", "one of 'debug', 'info', 'warning', 'error'"),
    ("max_stages", "1e3", "an integer of at least 1"),
]


@pytest.mark.parametrize(("key", "text", "expected"), BAD_TEXT_VALUES)
def test_a_bad_value_in_the_environment_names_the_variable(
    key: str, text: str, expected: str
) -> None:
    variable = f"CONVEYOR_{key.upper()}"
    message = refused(environ={**HOME, variable: text})
    assert message == (
        f"{key}: invalid value {text!r} from environment variable {variable}; expected {expected}"
    )


@pytest.mark.parametrize(
    ("key", "text", "expected"), [v for v in BAD_TEXT_VALUES if v[0] != "keep_workspaces"]
)
def test_a_bad_value_in_a_flag_names_the_flag(key: str, text: str, expected: str) -> None:
    flag = "--" + key.replace("_", "-")
    message = refused(environ=HOME, overrides=flags(f"{flag}={text}"))
    assert message == f"{key}: invalid value {text!r} from flag {flag}; expected {expected}"


def test_boolean_flags_take_no_value_and_words_are_strict() -> None:
    assert load_config(environ=HOME, overrides=flags("--keep-workspaces")).keep_workspaces
    assert not load_config(
        environ={**HOME, "CONVEYOR_KEEP_WORKSPACES": "1"}, overrides=flags("--no-keep-workspaces")
    ).keep_workspaces
    for word, value in [("yes", True), ("On", True), ("0", False), ("false", False)]:
        config = load_config(environ={**HOME, "CONVEYOR_KEEP_WORKSPACES": word})
        assert config.keep_workspaces is value


@pytest.mark.parametrize(
    "source",
    ["file", "environment", "flag"],
)
def test_a_listen_address_beyond_loopback_is_refused_from_every_source(
    tmp_path: Path, source: str
) -> None:
    address = "0.0.0.0:7474"
    kwargs: dict[str, object] = {"environ": HOME}
    if source == "file":
        kwargs["path"] = from_file(tmp_path, f'listen = ["unix:///tmp/a.sock", "{address}"]\n')
    elif source == "environment":
        kwargs["environ"] = {**HOME, "CONVEYOR_LISTEN": f"unix:///tmp/a.sock,{address}"}
    else:
        kwargs["overrides"] = flags("--listen", "unix:///tmp/a.sock", "--listen", address)
    message = refused(**kwargs)
    assert message.startswith(f"listen: invalid value {address!r} ")
    assert "only loopback addresses are allowed" in message
    assert {"file": "in ", "environment": "CONVEYOR_LISTEN", "flag": "--listen"}[source] in message


def test_relative_socket_paths_are_refused() -> None:
    message = refused(environ={**HOME, "CONVEYOR_LISTEN": "unix://rel.sock"})
    assert "a unix socket path must be absolute" in message


def test_unknown_keys_home_and_broken_toml_in_the_file(tmp_path: Path) -> None:
    path = from_file(tmp_path, 'max_concurent_runs = 4\nhome = "/srv"\n')
    message = refused(path=path, environ=HOME)
    assert f"{path}: unknown setting 'max_concurent_runs'; did you mean 'max_concurrent_runs'?" in (
        message
    )
    assert f"home: cannot be set in {path}" in message
    broken = from_file(tmp_path, "max_concurrent_runs = \n")
    assert refused(path=broken, environ=HOME).startswith(f"{broken}: ")
    assert refused(path=tmp_path / "missing.toml", environ=HOME).startswith(
        f"{tmp_path / 'missing.toml'}: "
    )


def test_every_bad_value_is_reported_not_just_the_first(tmp_path: Path) -> None:
    path = from_file(tmp_path, "kill_grace = -1\n")
    message = refused(
        path=path,
        environ={**HOME, "CONVEYOR_KEEP_WORKSPACES": "ture"},
        overrides=flags("--max-concurrent-runs", "2.9"),
    )
    lines = message.splitlines()
    assert len(lines) == 3
    assert {line.split(":")[0] for line in lines} == {
        "kill_grace",
        "keep_workspaces",
        "max_concurrent_runs",
    }


def test_precedence_is_defaults_then_file_then_environment_then_flags(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "conveyord.toml").write_text(
        "max_concurrent_runs = 2\nkill_grace = 1\nshutdown_timeout = 7\n"
        'stage_env_passthrough = ["PATH"]\n'
    )
    config = load_config(
        environ={
            "CONVEYOR_HOME": str(home),
            "CONVEYOR_KILL_GRACE": "2.5",
            "CONVEYOR_SHUTDOWN_TIMEOUT": "8",
            "CONVEYOR_STAGE_ENV_PASSTHROUGH": "PATH, HOME,",
        },
        overrides=flags("--shutdown-timeout", "9"),
    )
    assert config.home == home
    assert config.max_concurrent_runs == 2  # file
    assert config.kill_grace == 2.5  # environment over file
    assert config.shutdown_timeout == 9  # flag over environment
    assert config.stage_env_passthrough == ["PATH", "HOME"]
    assert config.hook_timeout == 30  # default
    assert (config.max_stages, config.max_needs, config.max_diagnostics) == (1000, 100, 100)


def test_the_home_flag_chooses_where_the_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "conveyord.toml").write_text("max_concurrent_runs = 3\n")
    config = load_config(environ=HOME, overrides=flags("--home", str(tmp_path)))
    assert config.home == tmp_path
    assert config.max_concurrent_runs == 3
    assert load_config(environ={"CONVEYOR_HOME": "~/x"}).home == Path("~/x").expanduser()


def test_every_setting_has_a_flag() -> None:
    import dataclasses

    from conveyor.daemon.config import Config

    overrides = flags()
    assert set(overrides) == {f.name for f in dataclasses.fields(Config)}
    assert all(value is None for value in overrides.values())


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("0.0.0.0:7480", "loopback IP only"),
        ("localhost:7480", "loopback IP only"),
        ("[::]:7480", "loopback IP only"),
        ("127.0.0.1", "expected HOST:PORT"),
        ("127.0.0.1:70000", "expected HOST:PORT"),
    ],
)
def test_the_dashboard_listens_on_a_loopback_ip_only(address: str, why: str) -> None:
    message = refused(environ=HOME, overrides=flags("--web-listen", address))
    assert message.startswith(f"web_listen: invalid value {address!r} from flag --web-listen")
    assert why in message


def test_the_dashboard_is_off_by_default_and_takes_a_loopback_ip() -> None:
    assert load_config(environ=HOME).web_listen == ""
    for address in ("127.0.0.1:7480", "[::1]:0", "127.0.0.2:7480"):
        config = load_config(environ={**HOME, "CONVEYOR_WEB_LISTEN": address})
        assert config.web_listen == address
