"""``conveyord``: the Conveyor daemon's command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import trio

from conveyor.daemon.api.server import ListenError
from conveyor.daemon.app import Daemon, HomeInUse
from conveyor.daemon.artifacts.signing import SigningKeyError
from conveyor.daemon.auth.policy import AccessFileError
from conveyor.daemon.config import ConfigError, add_flags, flag_overrides, load_config
from conveyor.daemon.executors.stage_user import StageUserError
from conveyor.daemon.memory import limit_malloc_arenas
from conveyor.daemon.pipeline.schema import pipeline_json_schema
from conveyor.daemon.secrets import cli as secrets_cli
from conveyor.daemon.secrets.redaction import (
    install_log_filter,
    install_stream_redaction,
    redact,
)
from conveyor.daemon.secrets.store import SecretsError
from conveyor.daemon.telemetry import TelemetryConfigError

log = logging.getLogger("conveyord")

#: Start-up failures a user can act on from their message alone: said in
#: one line, without a traceback.
EXPECTED_FAILURES = (
    AccessFileError,
    HomeInUse,
    ListenError,
    SigningKeyError,
    TelemetryConfigError,
    SecretsError,
    StageUserError,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyord",
        description="The Conveyor CI/CD daemon. Settings: defaults < config file < "
        "CONVEYOR_* environment < flags.",
    )
    sub = parser.add_subparsers(dest="command")
    # Flags may come before the command or after it: a command's parser
    # leaves out the flags it was not given, so it keeps those given before.
    serve = sub.add_parser(
        "serve", help="run the daemon (the default)", argument_default=argparse.SUPPRESS
    )
    sub.add_parser("schema", help="print the JSON Schema of conveyor.yaml")
    secrets = sub.add_parser(
        "secrets",
        help="define, list or remove the secrets stages may ask for",
        argument_default=argparse.SUPPRESS,
    )
    secrets_cli.add_commands(secrets)
    for p in (parser, serve, secrets):
        p.add_argument("--config", type=Path, help="TOML config file")
        add_flags(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Everything the daemon makes is its own unless it says otherwise:
    # files and folders are never open to others, not even for a moment.
    os.umask(0o077)
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(pipeline_json_schema(), indent=2, sort_keys=True))
        return 0
    try:
        config = load_config(path=getattr(args, "config", None), overrides=flag_overrides(args))
    except ConfigError as exc:
        for problem in str(exc).splitlines():
            print(f"conveyord: configuration error: {problem}", file=sys.stderr)
        return 2
    if args.command == "secrets":
        return secrets_cli.run(args, config)
    install_stream_redaction()
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_filter()
    limit_malloc_arenas()  # before the daemon starts its threads
    try:
        trio.run(Daemon(config).run)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        cause = _first_error(exc)
        if not isinstance(cause, EXPECTED_FAILURES):
            # A crash: keep everything needed to find out why.
            log.error("conveyord crashed", exc_info=exc)
        print(f"conveyord: {type(cause).__name__}: {redact(str(cause))}", file=sys.stderr)
        return 1
    return 0


def _first_error(exc: BaseException) -> BaseException:
    """The underlying error of a (possibly nested) exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())
