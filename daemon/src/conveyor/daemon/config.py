"""Daemon configuration: defaults < config file < environment < flags.

The file is TOML (``$CONVEYOR_HOME/conveyord.toml`` when present, or
``--config PATH``) with the keys below at top level; each key also reads from
``CONVEYOR_<KEY>`` (upper case; lists comma-separated) and from the flag
``--<key>`` (dashes for underscores).

Every value is checked against its key's type and bounds with pydantic, as
it comes from its source: TOML values must already have the right type
(``2.9`` is not an integer, ``"yes"`` is not a boolean), text from the
environment and flags must spell one (``ture`` is neither true nor false).
A bad value raises :class:`ConfigError` naming the key, the source and what
was expected.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails

from conveyor.client.address import SOCKET_NAME, conveyor_home, is_loopback_address
from conveyor.daemon.artifacts.model import RegistryCredential
from conveyor.daemon.pipeline import EnvironmentSpec, Limits
from conveyor.daemon.secrets.store import SecretsError, check_name


class ConfigError(Exception):
    """The configuration is unusable; the message says which value and why
    (one problem per line)."""


def check_listen_address(address: str) -> str:
    """``unix:///absolute/path`` or ``HOST:PORT`` (``[v6]:PORT`` for IPv6).
    Whether a TCP address may be used without TLS is decided with the other
    settings (see :func:`listener_problems`). Raises ValueError otherwise."""
    if address.startswith("unix://"):
        if not address.removeprefix("unix://").startswith("/"):
            raise ValueError("a unix socket path must be absolute")
        return address
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not host:
        raise ValueError("expected unix:///path or HOST:PORT")
    return address


def check_web_listen(address: str) -> str:
    """Empty (no dashboard) or ``HOST:PORT`` with HOST a loopback IP
    (``127.0.0.1``, ``[::1]``): the dashboard serves plain HTTP, so it never
    listens beyond loopback. Raises ValueError otherwise."""
    if not address:
        return address
    host, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) > 65535 or not host:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:7480 (port 0 picks a free one)")
    if not is_loopback_address(host):
        raise ValueError(
            "the dashboard listens on a loopback IP only (127.0.0.1:PORT or [::1]:PORT);"
            " put a TLS-terminating proxy in front of it to reach it from elsewhere"
        )
    return address


def _file_path(text: str) -> str:
    """A file setting: "" (not set), or the path made absolute."""
    return str(Path(text).expanduser().absolute()) if text else ""


def _socket_mode(text: str) -> str:
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise ValueError("expected an octal file mode such as 0600 or 0660")
    return text


def _absolute(path: Path) -> Path:
    return path.expanduser().absolute()


def _user_name(name: str) -> str:
    if name and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?", name):
        raise ValueError("expected a user name or a numeric uid")
    if name in ("root", "0"):
        raise ValueError("stages must not run as root; name an unprivileged user")
    return name


def _secret_name(name: str) -> str:
    try:
        return check_name(name)
    except SecretsError as exc:
        raise ValueError(str(exc)) from None


DEFAULT_PASSTHROUGH = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME"]
_LIMITS = Limits()

Folder = Annotated[Path, AfterValidator(_absolute)]
#: An absolute path that a TOML file gives as a string.
AbsolutePath = Annotated[
    Path,
    BeforeValidator(lambda value: Path(value) if isinstance(value, str) and value else value),
    AfterValidator(_absolute),
]


def check_port_range(text: str) -> str:
    """``LOW-HIGH``, two ports with 1024 <= LOW <= HIGH <= 65535, at least
    ten apart. Raises ValueError otherwise."""
    low, dash, high = text.partition("-")
    if not dash or not low.isdigit() or not high.isdigit():
        raise ValueError("expected LOW-HIGH, e.g. 12000-19999")
    if not 1024 <= int(low) <= int(high) - 9 or int(high) > 65535:
        raise ValueError("expected 1024 <= LOW, LOW + 9 <= HIGH, HIGH <= 65535")
    return text


def port_range(text: str) -> range:
    """The ports of a :func:`check_port_range` value, both ends included."""
    low, _, high = text.partition("-")
    return range(int(low), int(high) + 1)


ListenAddress = Annotated[str, AfterValidator(check_listen_address)]
WebListenAddress = Annotated[str, AfterValidator(check_web_listen)]
FilePath = Annotated[str, AfterValidator(_file_path)]
SocketMode = Annotated[str, AfterValidator(_socket_mode)]
Count = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _absolute_file(path: str) -> str:
    expanded = Path(path).expanduser()
    if not expanded.is_absolute():
        raise ValueError(f"{path!r}: give an absolute path")
    return str(expanded)


class RegistryLogin(BaseModel):
    """A registry login the daemon holds for push stages that name it
    (``with: {credentials: NAME}``): ``[registry_credentials.NAME]``.

    The password is read from ``password_file`` when the configuration
    loads (before the daemon serves), kept in memory only, and never shown.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The registry as image names write it: ``127.0.0.1:5000``, ``docker.io``.
    registry: Annotated[str, Field(min_length=1)]
    username: Annotated[str, Field(min_length=1)]
    password_file: Annotated[str, AfterValidator(_absolute_file)]
    _password: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError(
                "a password is never written in the configuration: put it in a file only"
                " the daemon's user can read and name that file in password_file"
            )
        return data

    @model_validator(mode="after")
    def _read_password(self) -> RegistryLogin:
        try:
            text = Path(self.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise ValueError(f"cannot read password_file {self.password_file}: {why}") from None
        password = text.rstrip("\r\n")
        if not password:
            raise ValueError(f"password_file {self.password_file} is empty")
        self._password = password
        return self

    def credential(self) -> RegistryCredential:
        return RegistryCredential(self.registry, self.username, self._password)


LoginName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]


def setting(default: Any, *, help: str) -> Any:
    """A configuration key: its default and the help shown for ``--key``."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    home: Folder = field(
        default_factory=conveyor_home,
        metadata={"help": "folder for the database, logs, workspaces and the default socket"},
    )
    listen: list[ListenAddress] = setting(
        [],
        help="gRPC listen address: unix:///path, or HOST:PORT (a loopback IP such as"
        " 127.0.0.1:PORT / [::1]:PORT, or any address with TLS and auth) (repeatable;"
        " default: the socket $CONVEYOR_HOME/conveyord.sock)",
    )
    web_listen: WebListenAddress = setting(
        "",
        help="address of the web dashboard: a loopback HOST:PORT such as 127.0.0.1:7480"
        " (port 0 picks a free one); empty: no dashboard",
    )
    auth: bool = setting(
        True,
        help="authenticate every call (peer uid, bearer token or client certificate) and check"
        " its permission; false turns both off: every caller is then an anonymous admin",
    )
    access_file: FilePath = setting(
        "",
        help="TOML file of identities, their roles and repository folders (default:"
        " $CONVEYOR_HOME/access.toml when it exists); reloaded on SIGHUP",
    )
    reflection: Literal["authenticated", "open", "off"] = setting(
        "authenticated",
        help="server reflection: for any 'authenticated' caller, 'open' to anyone who can"
        " connect, or 'off'",
    )
    tls_cert_file: FilePath = setting(
        "",
        help="PEM certificate chain served on TCP listeners (TLS); re-read when it changes",
    )
    tls_key_file: FilePath = setting("", help="PEM private key of tls_cert_file")
    tls_client_ca_file: FilePath = setting(
        "",
        help="PEM CA certificates: TCP clients must then present a certificate signed by"
        " one (mutual TLS); its subject's common name is the caller's identity",
    )
    allow_insecure_non_loopback: bool = setting(
        False,
        help="listen on a TCP address that is not a loopback IP without TLS or without"
        " auth: anyone who can reach it could read the traffic (tokens included)",
    )
    socket_mode: SocketMode = setting(
        "0600", help="permissions of the unix sockets the daemon listens on (octal)"
    )
    socket_group: str = setting(
        "",
        help="group (name or gid) of the unix sockets; with socket_mode 0660 its members"
        " can connect (each is still authenticated by its uid)",
    )
    max_connections: Count = setting(
        1024,
        help="unix socket connections open at once when auth is on (each is relayed to read"
        " its peer's uid); more are closed at once",
    )
    max_concurrent_runs: Count = setting(16, help="runs executing at once; more wait in the queue")
    kill_grace: Seconds = setting(
        5.0, help="seconds between SIGTERM and SIGKILL when a stage is cancelled or times out"
    )
    grpc_workers: Annotated[int, Field(ge=2)] = setting(
        64,
        help="most gRPC worker threads for unary calls (a call holds one while it runs;"
        " streams hold none; a thread idle for 10 s exits)",
    )
    max_streams: Count = setting(
        2048,
        help="WatchRun/StreamLogs streams open at once; more get RESOURCE_EXHAUSTED (each"
        " open stream costs memory, no thread)",
    )
    max_concurrent_rpcs: Count = setting(
        256,
        help="unary calls in progress at once; beyond that, RESOURCE_EXHAUSTED (streams are"
        " bounded by max_streams)",
    )
    shutdown_mode: Literal["cancel", "finish"] = setting(
        "cancel", help="on SIGTERM/SIGINT: 'cancel' running runs, or let them 'finish'"
    )
    shutdown_timeout: Seconds = setting(
        30.0, help="seconds to wait for runs on shutdown before stopping them anyway"
    )
    min_free_space: Annotated[int, Field(ge=0)] = setting(
        100,
        help="MiB that must be free on the home's file system for new runs to be taken;"
        " below it SubmitRun answers RESOURCE_EXHAUSTED (0: no floor)",
    )
    replica_ports: Annotated[str, AfterValidator(check_port_range)] = setting(
        "12000-19999",
        help="ports (LOW-HIGH) deployed replicas listen on at 127.0.0.1, behind their"
        " environment's front proxy; keep it out of the system's range for outgoing"
        " connections (net.ipv4.ip_local_port_range), which may take a port picked"
        " before the replica binds it",
    )
    keep_workspaces: bool = setting(
        False, help="keep each run's workspace after it finishes (for debugging)"
    )
    stage_env_passthrough: list[str] = setting(
        DEFAULT_PASSTHROUGH, help="daemon environment variables handed to stage processes"
    )
    stage_inherit_venv: bool = setting(
        False,
        help="let stages use the Python virtual environment the daemon runs in (its bin"
        " folder on PATH, VIRTUAL_ENV); by default it is removed from their environment",
    )
    stage_user: Annotated[str, AfterValidator(_user_name)] = setting(
        "",
        help="when conveyord runs as root: the unprivileged user (name or uid) local-executor"
        " stages run as, with no capabilities (empty: the daemon's own user)",
    )
    secrets_key_file: AbsolutePath = setting(
        Path("/etc/conveyor/secrets.key"),
        help="key of the encrypted secrets file $CONVEYOR_HOME/secrets.enc; keep it out of"
        " the home (CONVEYOR_SECRETS_KEY, the key itself in base64, takes precedence)",
    )
    secrets_from_env: list[Annotated[str, AfterValidator(_secret_name)]] = setting(
        [], help="names of the daemon's environment variables that stages may ask for as secrets"
    )
    hook_timeout: PositiveSeconds = setting(
        30.0, help="seconds a plugin's lifecycle hook may take before it is abandoned"
    )
    max_stages: Count = setting(
        _LIMITS.max_stages, help="stages a pipeline file may have; more is INVALID_ARGUMENT"
    )
    max_needs: Count = setting(
        _LIMITS.max_needs, help="entries a stage's needs may have; more is INVALID_ARGUMENT"
    )
    max_diagnostics: Count = setting(
        _LIMITS.max_diagnostics,
        help="problems reported for one pipeline file; the rest are counted",
    )
    log_level: Literal["debug", "info", "warning", "error"] = setting(
        "info", help="debug, info, warning or error"
    )
    telemetry_exporter: Literal["", "otlp", "console", "none"] = setting(
        "",
        help="trace/metric exporter when OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER are"
        " unset: otlp, console or none (default: otlp if an endpoint is set)",
    )
    otlp_endpoint: str = setting(
        "", help="OTLP/gRPC endpoint when OTEL_EXPORTER_OTLP_ENDPOINT is unset"
    )
    telemetry_shutdown_timeout: Seconds = setting(
        5.0, help="seconds to flush telemetry on shutdown before giving up on it"
    )
    registry_credentials: dict[LoginName, RegistryLogin] = setting(
        {},
        help="registry logins that push stages name with 'credentials: NAME': a TOML table"
        " NAME = {registry, username, password_file} (JSON in the environment and flag)",
    )

    dora_window_days: Count = setting(
        30,
        help="days of deployment history the DORA figures cover (their metrics, and"
        " conveyor dora without --window)",
    )
    environments: dict[LoginName, EnvironmentSpec] = setting(
        {},
        help="deployment environments, as in a pipeline file's environments: (a TOML table"
        " NAME = {target, port, run, config, ...}; JSON in the environment and flag); an"
        " environment defined here wins over a pipeline's of the same name",
    )

    plugin_settings: dict[LoginName, dict[str, Any]] = setting(
        {},
        help="each plugin's own settings, by its entry-point name: a TOML table"
        " [plugin_settings.NAME] (JSON in the environment and flag), handed to the plugin's"
        " conveyor_configure hook",
    )

    def registry_credential(self, name: str) -> RegistryCredential | None:
        """The login ``registry_credentials`` calls ``name``, if any (no I/O:
        the password was read when the configuration loaded)."""
        login = self.registry_credentials.get(name)
        return login.credential() if login is not None else None

    @property
    def database_path(self) -> Path:
        return self.home / "conveyor.db"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @property
    def artifacts_dir(self) -> Path:
        """The content-addressed store of file artifacts."""
        return self.home / "artifacts"

    @property
    def listen_addresses(self) -> list[str]:
        return self.listen or [f"unix://{self.home / SOCKET_NAME}"]

    @property
    def access_path(self) -> Path | None:
        """The access file: the setting, or ``access.toml`` in the home when
        it exists (None otherwise)."""
        if self.access_file:
            return Path(self.access_file)
        default = self.home / "access.toml"
        return default if default.is_file() else None

    @property
    def tls(self) -> bool:
        """Whether TCP listeners serve TLS."""
        return bool(self.tls_cert_file)


def listener_problems(config: Config, listen_source: str) -> list[str]:
    """What is wrong with the listeners and TLS settings taken together:
    a TCP address that is not a loopback IP literal (127.0.0.0/8, ::1) needs
    TLS and authentication unless ``allow_insecure_non_loopback`` is set;
    a TLS certificate needs its key. ``listen_source`` says where ``listen``
    came from ("from flag --listen")."""
    problems = []
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        given, absent = (
            ("tls_cert_file", "tls_key_file")
            if config.tls_cert_file
            else ("tls_key_file", "tls_cert_file")
        )
        problems.append(f"{absent}: required with {given} (TLS needs a certificate and its key)")
    if config.tls_client_ca_file and not config.tls_cert_file:
        problems.append(
            "tls_client_ca_file: needs tls_cert_file and tls_key_file (client certificates"
            " are checked only over TLS)"
        )
    if config.allow_insecure_non_loopback:
        return problems
    for address in config.listen:
        if address.startswith("unix://"):
            continue
        host = address.rpartition(":")[0]
        if is_loopback_address(host):
            continue
        missing = [what for what, ok in (("TLS", config.tls), ("auth", config.auth)) if not ok]
        if missing:
            problems.append(
                f"listen: invalid value {address!r} {listen_source}: only loopback addresses are"
                " allowed without TLS and authentication (a loopback address is an IP literal"
                " in 127.0.0.0/8 or ::1; a host name is not one): anyone who can reach"
                f" {host} could read the calls, tokens included"
                + ("" if config.auth else ", and run commands as the daemon's user")
                + f"; {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} off."
                " Set tls_cert_file and tls_key_file (and keep auth on), use a unix socket or"
                " a loopback address, or force it with allow_insecure_non_loopback = true"
            )
    return problems


# -- checking one value -----------------------------------------------------------------


@cache
def _types() -> dict[str, Any]:
    return typing.get_type_hints(Config, include_extras=True)


@cache
def _adapter(key: str) -> TypeAdapter[Any]:
    return TypeAdapter(_types()[key])


def _is_list(key: str) -> bool:
    return typing.get_origin(_types()[key]) is list


def _is_bool(key: str) -> bool:
    return _types()[key] is bool


def _is_table(key: str) -> bool:
    return typing.get_origin(_types()[key]) is dict


def _expected(key: str, *, strict: bool) -> str:
    """What ``key`` takes, in words: ``an integer of at least 1``. Text
    (``strict`` false) may spell a boolean more ways than TOML can."""
    hint = _types()[key]
    if typing.get_origin(hint) is list:
        return "a list of strings"
    if typing.get_origin(hint) is dict:
        fields = {
            "environments": "target, port, ...",
            "plugin_settings": "setting = value, ...",
        }.get(key, "registry, username, password_file")
        return f"a table of NAME = {{{fields}}}" + ("" if strict else " written as JSON")
    constraints: list[Any] = []
    if typing.get_origin(hint) is Annotated:
        hint, *metadata = typing.get_args(hint)
        for item in metadata:
            constraints += getattr(item, "metadata", [item])
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(hint))
    words = {
        int: "an integer",
        float: "a finite number",
        bool: "true or false" if strict else "true or false (or 1/0, yes/no, on/off)",
        str: "a string",
        Path: "a path",
    }.get(hint, str(hint))
    for constraint in constraints:
        if isinstance(constraint, Ge):
            words += f" of at least {constraint.ge}"
        elif isinstance(constraint, Gt):
            words += f" greater than {constraint.gt}"
    return words


def _describe(key: str, value: Any, source: str, error: ErrorDetails, *, strict: bool) -> str:
    parts = [str(part) for part in error.get("loc", ())]
    where = ".".join(parts)
    if parts[-1:] == ["[key]"]:
        return (
            f"{key}: {parts[0]!r} is not a name (letters, digits, _, . and -, at most 100)"
            f" ({source})"
        )
    if where and _is_table(key):  # a problem inside one entry of a table
        reason = error["msg"].removeprefix("Value error, ")
        return f"{key}.{where}: {reason} ({source})"
    if error["type"] == "value_error":
        reason = error["msg"].removeprefix("Value error, ")
        item = error.get("input", value)
        return f"{key}: invalid value {item!r} {source}: {reason}"
    return f"{key}: invalid value {value!r} {source}; expected {_expected(key, strict=strict)}"


class _Layer:
    """The values of one source, each checked as it is added."""

    def __init__(self, values: dict[str, Any], problems: list[str]) -> None:
        self.values = values
        self.problems = problems

    def set(self, key: str, value: Any, source: str, *, strict: bool) -> None:
        try:
            if _is_table(key) and isinstance(value, str):  # JSON text from env or flag
                self.values[key] = _adapter(key).validate_json(value)
            else:
                self.values[key] = _adapter(key).validate_python(value, strict=strict)
        except ValidationError as exc:
            problem = _describe(key, value, source, exc.errors()[0], strict=strict)
            self.problems.append(problem)


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


# -- the sources ---------------------------------------------------------------------------


def _keys() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def _read_file(path: Path, layer: _Layer) -> None:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    keys = _keys()
    for key, value in data.items():
        if key == "home":
            layer.problems.append(
                f"home: cannot be set in {path}, the file that lives in it;"
                " use CONVEYOR_HOME or --home"
            )
        elif key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            layer.problems.append(f"{path}: unknown setting {key!r}{hint}")
        else:
            # TOML values are typed: they must already be of the key's type.
            layer.set(key, value, f"in {path}", strict=True)


def _read_environment(environ: Mapping[str, str], layer: _Layer) -> None:
    for key in _keys():
        variable = f"CONVEYOR_{key.upper()}"
        text = environ.get(variable)
        if text is None or (key == "home" and not text):
            continue
        value: Any = _split(text) if _is_list(key) else text
        layer.set(key, value, f"from environment variable {variable}", strict=False)


def _read_flags(overrides: Mapping[str, Any], layer: _Layer) -> None:
    for key in _keys():
        value = overrides.get(key)
        if value is not None:
            flag = "--" + key.replace("_", "-")
            layer.set(key, value, f"from flag {flag}", strict=False)


def load_config(
    *,
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from file, environment and flag overrides
    (``None`` for a flag not given). Raises :class:`ConfigError` listing
    every bad value, each with its key, its source and what was expected."""
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    problems: list[str] = []
    from_file: dict[str, Any] = {}
    from_env: dict[str, Any] = {}
    from_flags: dict[str, Any] = {}
    _read_environment(environ, _Layer(from_env, problems))
    _read_flags(overrides, _Layer(from_flags, problems))
    home = from_flags.get("home") or from_env.get("home") or conveyor_home()
    file_path = path
    if file_path is None:
        candidate = Path(home) / "conveyord.toml"
        file_path = candidate if candidate.is_file() else None
    if file_path is not None:
        _read_file(file_path, _Layer(from_file, problems))
    if problems:
        raise ConfigError("\n".join(problems))
    config = Config(**{**from_file, **from_env, **from_flags})
    if "listen" in from_flags:
        listen_source = "from flag --listen"
    elif "listen" in from_env:
        listen_source = "from environment variable CONVEYOR_LISTEN"
    else:
        listen_source = f"in {file_path}"
    problems = listener_problems(config, listen_source)
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def add_flags(parser: argparse.ArgumentParser) -> None:
    """A ``--key`` flag for every setting."""
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if _is_bool(f.name):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif _is_list(f.name):
            parser.add_argument(flag, action="append", metavar="VALUE", help=help_text)
        elif _is_table(f.name):
            parser.add_argument(flag, metavar="JSON", help=help_text)
        else:
            parser.add_argument(flag, metavar=f.name.upper(), help=help_text)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (None for those that were not)."""
    return {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Config)}
