"""``conveyord``: the Conveyor daemon's command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import trio

from conveyor.daemon.app import Daemon
from conveyor.daemon.config import ConfigError, load_config
from conveyor.daemon.pipeline.schema import pipeline_json_schema


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
        p.add_argument("--home", help="data folder (default $CONVEYOR_HOME or ~/.conveyor)")
        p.add_argument(
            "--listen",
            action="append",
            help="address to serve on: unix:///path or 127.0.0.1:PORT (repeatable)",
        )
        p.add_argument("--max-concurrent-runs", type=int)
        p.add_argument("--kill-grace", type=float, help="seconds from SIGTERM to SIGKILL")
        p.add_argument("--shutdown-mode", choices=["cancel", "finish"])
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(pipeline_json_schema(), indent=2, sort_keys=True))
        return 0
    overrides = {
        "home": args.home,
        "listen": args.listen,
        "max_concurrent_runs": args.max_concurrent_runs,
        "kill_grace": args.kill_grace,
        "shutdown_mode": args.shutdown_mode,
        "log_level": args.log_level,
    }
    try:
        config = load_config(path=args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"conveyord: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        trio.run(Daemon(config).run)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a start-up failure: say what, not a traceback
        logging.getLogger("conveyord").debug("fatal", exc_info=True)
        print(f"conveyord: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
