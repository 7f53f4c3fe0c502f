"""``conveyord``: the Conveyor daemon's command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import trio

from conveyor.daemon.api.server import ListenError
from conveyor.daemon.app import Daemon, HomeInUse
from conveyor.daemon.auth.policy import AccessFileError
from conveyor.daemon.config import ConfigError, add_flags, flag_overrides, load_config
from conveyor.daemon.pipeline.schema import pipeline_json_schema
from conveyor.daemon.telemetry import TelemetryConfigError

log = logging.getLogger("conveyord")

#: Start-up failures a user can act on from their message alone: said in
#: one line, without a traceback.
EXPECTED_FAILURES = (AccessFileError, HomeInUse, ListenError, TelemetryConfigError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyord",
        description="The Conveyor CI/CD daemon. Settings: defaults < config file < "
        "CONVEYOR_* environment < flags.",
    )
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the daemon (the default)")
    sub.add_parser("schema", help="print the JSON Schema of conveyor.yaml")
    for p in (parser, serve):
        p.add_argument("--config", type=Path, help="TOML config file")
        add_flags(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(pipeline_json_schema(), indent=2, sort_keys=True))
        return 0
    try:
        config = load_config(path=args.config, overrides=flag_overrides(args))
    except ConfigError as exc:
        for problem in str(exc).splitlines():
            print(f"conveyord: configuration error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        trio.run(Daemon(config).run)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        cause = _first_error(exc)
        if not isinstance(cause, EXPECTED_FAILURES):
            # A crash: keep everything needed to find out why.
            log.error("conveyord crashed", exc_info=exc)
        print(f"conveyord: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 1
    return 0


def _first_error(exc: BaseException) -> BaseException:
    """The underlying error of a (possibly nested) exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())
