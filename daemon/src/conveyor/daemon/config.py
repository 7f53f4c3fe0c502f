"""Daemon configuration: defaults < config file < environment < flags.

The file is TOML (``$CONVEYOR_HOME/conveyord.toml`` when present, or
``--config PATH``) with the keys below at top level; each key also reads from
``CONVEYOR_<KEY>`` (upper case; lists comma-separated) and from the flag
``--<key>`` (dashes for underscores).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.client.address import SOCKET_NAME, conveyor_home


class ConfigError(Exception):
    pass


LOG_LEVELS = ("debug", "info", "warning", "error")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def check_listen_address(address: str) -> None:
    """Unix sockets and loopback TCP only: the API has no authentication yet,
    and anyone who can reach it can run commands as the daemon's user."""
    if address.startswith("unix://"):
        if not address.removeprefix("unix://").startswith("/"):
            raise ConfigError(f"listen {address!r}: a unix socket path must be absolute")
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not host:
        raise ConfigError(f"listen {address!r}: expected unix:///path or HOST:PORT")
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise ConfigError(
            f"listen {address!r}: only loopback addresses are allowed, because the API has"
            " no authentication yet (use unix:///path, 127.0.0.1:PORT or [::1]:PORT)"
        )


DEFAULT_PASSTHROUGH = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME"]


def setting(default: Any, *, help: str) -> Any:
    """A configuration key: its default and the help shown for ``--key``."""
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    home: Path = field(
        default_factory=conveyor_home,
        metadata={"help": "folder for the database, logs, workspaces and the default socket"},
    )
    listen: list[str] = field(
        default_factory=list,
        metadata={
            "help": "gRPC listen address: unix:///path or a loopback 127.0.0.1:PORT /"
            " [::1]:PORT (repeatable; default: the socket $CONVEYOR_HOME/conveyord.sock)"
        },
    )
    max_concurrent_runs: int = setting(16, help="runs executing at once; more wait in the queue")
    kill_grace: float = setting(
        5.0, help="seconds between SIGTERM and SIGKILL when a stage is cancelled or times out"
    )
    grpc_workers: int = setting(64, help="gRPC worker threads (each open stream holds one)")
    max_streams: int = setting(
        48,
        help="WatchRun/StreamLogs streams open at once; more get RESOURCE_EXHAUSTED (at most"
        " grpc_workers - 16, so threads stay free for other calls and health checks)",
    )
    max_concurrent_rpcs: int = setting(
        256, help="RPCs in progress at once; beyond that, RESOURCE_EXHAUSTED"
    )
    shutdown_mode: str = setting(
        "cancel", help="on SIGTERM/SIGINT: 'cancel' running runs, or let them 'finish'"
    )
    shutdown_timeout: float = setting(
        30.0, help="seconds to wait for runs on shutdown before stopping them anyway"
    )
    keep_workspaces: bool = setting(
        False, help="keep each run's workspace after it finishes (for debugging)"
    )
    stage_env_passthrough: list[str] = field(
        default_factory=lambda: list(DEFAULT_PASSTHROUGH),
        metadata={"help": "daemon environment variables handed to stage processes"},
    )
    hook_timeout: float = setting(
        30.0, help="seconds a plugin's lifecycle hook may take before it is abandoned"
    )
    log_level: str = setting("info", help="debug, info, warning or error")
    telemetry_exporter: str = setting(
        "",
        help="trace/metric exporter when OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER are"
        " unset: otlp, console or none (default: otlp if an endpoint is set)",
    )
    otlp_endpoint: str = setting(
        "", help="OTLP/gRPC endpoint when OTEL_EXPORTER_OTLP_ENDPOINT is unset"
    )
    telemetry_shutdown_timeout: float = setting(
        5.0, help="seconds to flush telemetry on shutdown before giving up on it"
    )

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
    def listen_addresses(self) -> list[str]:
        return self.listen or [f"unix://{self.home / SOCKET_NAME}"]

    def check(self) -> None:
        if self.max_concurrent_runs < 1:
            raise ConfigError("max_concurrent_runs must be at least 1")
        if self.kill_grace < 0:
            raise ConfigError("kill_grace must not be negative")
        if self.grpc_workers < 2:
            raise ConfigError("grpc_workers must be at least 2")
        if self.shutdown_mode not in ("cancel", "finish"):
            raise ConfigError("shutdown_mode must be 'cancel' or 'finish'")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of: {', '.join(LOG_LEVELS)}")
        if self.telemetry_exporter not in ("", "otlp", "console", "none"):
            raise ConfigError("telemetry_exporter must be 'otlp', 'console' or 'none'")
        if self.hook_timeout <= 0:
            raise ConfigError("hook_timeout must be positive")
        for address in self.listen:
            check_listen_address(address)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in ("int", int):
            return int(value)
        if kind in ("float", float):
            return float(value)
        if kind in ("bool", bool):
            if isinstance(value, bool):
                return value
            return str(value).lower() in ("1", "true", "yes", "on")
        if kind in ("Path", Path):
            return Path(value).expanduser().absolute()
        if kind in ("list[str]", list):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: invalid value {value!r} ({exc})") from None


def load_config(
    *,
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from file, environment and flag overrides."""
    environ = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    home = environ.get("CONVEYOR_HOME")
    if overrides and overrides.get("home"):
        home = str(overrides["home"])
    if home:
        values["home"] = _coerce("home", "Path", home)
    file_path = path
    if file_path is None:
        candidate = Path(values.get("home") or conveyor_home()) / "conveyord.toml"
        file_path = candidate if candidate.is_file() else None
    if file_path is not None:
        try:
            data = tomllib.loads(file_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{file_path}: {exc}") from None
        for key, value in data.items():
            if key not in fields:
                raise ConfigError(f"{file_path}: unknown setting {key!r}")
            if key == "home":
                raise ConfigError(
                    f"{file_path}: 'home' cannot be set in the file that lives in it;"
                    " use CONVEYOR_HOME or --home"
                )
            values[key] = _coerce(key, fields[key].type, value)
    for name, f in fields.items():
        env_value = environ.get(f"CONVEYOR_{name.upper()}")
        if env_value is not None and name != "home":
            values[name] = _coerce(name, f.type, env_value)
    for name, value in (overrides or {}).items():
        if value is not None and name in fields:
            values[name] = _coerce(name, fields[name].type, value)
    config = Config(**values)
    config.check()
    return config


def add_flags(parser: argparse.ArgumentParser) -> None:
    """A ``--key`` flag for every setting."""
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif f.type in ("list[str]", list):
            parser.add_argument(flag, action="append", metavar="VALUE", help=help_text)
        else:
            parser.add_argument(flag, metavar=f.name.upper(), help=help_text)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (None for those that were not)."""
    return {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Config)}
