"""Daemon configuration: defaults < config file < environment < flags.

The file is TOML (``$CONVEYOR_HOME/conveyord.toml`` when present, or
``--config PATH``) with the keys below at top level; each key also reads from
``CONVEYOR_<KEY>`` (upper case; lists comma-separated) and from the flag
``--<key>`` (dashes for underscores).
"""

from __future__ import annotations

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


DEFAULT_PASSTHROUGH = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME"]


@dataclass
class Config:
    #: Folder for the database, logs, workspaces and the default socket.
    home: Path = field(default_factory=conveyor_home)
    #: gRPC listen addresses: ``unix:///path`` or ``127.0.0.1:PORT``. Default:
    #: the socket ``$CONVEYOR_HOME/conveyord.sock`` only.
    listen: list[str] = field(default_factory=list)
    #: Runs executing at once; more wait in the queue.
    max_concurrent_runs: int = 16
    #: Seconds between SIGTERM and SIGKILL when a stage is cancelled or times out.
    kill_grace: float = 5.0
    #: gRPC worker threads (each open stream holds one).
    grpc_workers: int = 64
    #: RPCs in progress at once; beyond that, RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 256
    #: On SIGTERM/SIGINT: "cancel" running runs, or let them "finish".
    shutdown_mode: str = "cancel"
    #: Seconds to wait for runs on shutdown before cancelling them anyway.
    shutdown_timeout: float = 30.0
    #: Keep each run's workspace after it finishes (for debugging).
    keep_workspaces: bool = False
    #: Daemon environment variables handed to stage processes.
    stage_env_passthrough: list[str] = field(default_factory=lambda: list(DEFAULT_PASSTHROUGH))
    log_level: str = "info"
    #: Trace/metric exporter when no OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER
    #: is set: "otlp", "console" or "none" ("" = otlp if an endpoint is set).
    telemetry_exporter: str = ""
    #: OTLP/gRPC endpoint when OTEL_EXPORTER_OTLP_ENDPOINT is not set,
    #: e.g. "http://127.0.0.1:4317".
    otlp_endpoint: str = ""
    #: Seconds to flush telemetry on shutdown before giving up on it.
    telemetry_shutdown_timeout: float = 5.0

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
