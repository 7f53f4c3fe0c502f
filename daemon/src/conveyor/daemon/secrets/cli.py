"""``conveyord secrets set|list|rm``: manage the encrypted secrets file.

A subcommand of the daemon, not of ``conveyor``: it needs the key, which
only the daemon's host holds. A value is read from standard input (without
echo from a terminal), never from the command line, where ``ps`` and shell
history would show it. A running daemon picks the change up within a
second or so.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from conveyor.daemon.config import Config
from conveyor.daemon.secrets import store


def add_commands(parser: argparse.ArgumentParser) -> None:
    """The ``set``, ``list`` and ``rm`` subcommands under ``parser``."""
    actions = parser.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    set_ = actions.add_parser(
        "set", help="define or replace a secret; its value is read from standard input"
    )
    set_.add_argument("name", help="the secret's name (stages get it as this variable)")
    actions.add_parser("list", help="the names of the secrets (never their values)")
    rm = actions.add_parser("rm", help="remove a secret")
    rm.add_argument("name")


def run(args: argparse.Namespace, config: Config) -> int:
    """Do the ``secrets`` action in ``args``; the exit status."""
    try:
        if args.secrets_command == "set":
            return _set(config, args.name)
        if args.secrets_command == "rm":
            return _remove(config, args.name)
        return _list(config)
    except store.SecretsError as exc:
        print(f"conveyord secrets: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"conveyord secrets: {exc}", file=sys.stderr)
        return 1


def _owner(home: Path) -> tuple[int, int] | None:
    """Root making files for a daemon that runs as someone else: give
    them to the owner of the home."""
    if os.geteuid() != 0:
        return None
    st = home.stat()
    return (st.st_uid, st.st_gid) if st.st_uid != 0 else None


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"value of {name}: ")
    value = sys.stdin.read()
    # one line ending, as `echo` or a here-string add; the rest is the value
    return value.removesuffix("\n").removesuffix("\r")


def _set(config: Config, name: str) -> int:
    store.check_name(name)
    value = store.check_value(name, _read_value(name))
    home = config.home
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = _owner(home)
    key = store.load_key(config.secrets_key_file, os.environ)
    if key is None:
        key = store.create_key(config.secrets_key_file, owner=owner)
        print(
            f"conveyord secrets: made a new key, {config.secrets_key_file}: keep it (and a copy"
            " apart from the home's backups); without it the secrets cannot be read",
            file=sys.stderr,
        )
    path = home / store.SECRETS_FILE
    with store.locked(home):
        values = store.read_secrets(path, key)
        replaced = name in values
        values[name] = value
        store.write_secrets(path, key, values, owner=owner)
    print(
        f"conveyord secrets: {'replaced' if replaced else 'defined'} {name}"
        f" ({len(values)} secret(s) in {path})",
        file=sys.stderr,
    )
    return 0


def _remove(config: Config, name: str) -> int:
    home = config.home
    path = home / store.SECRETS_FILE
    key = store.load_key(config.secrets_key_file, os.environ)
    with store.locked(home):
        values = store.read_secrets(path, key)
        if name not in values:
            print(f"conveyord secrets: no secret {name} in {path}", file=sys.stderr)
            return 1
        del values[name]
        assert key is not None  # the file was read with it
        store.write_secrets(path, key, values, owner=_owner(home))
    print(f"conveyord secrets: removed {name}", file=sys.stderr)
    return 0


def _list(config: Config) -> int:
    path = config.home / store.SECRETS_FILE
    key = store.load_key(config.secrets_key_file, os.environ) if path.exists() else None
    for name in sorted(store.read_secrets(path, key)):
        print(name)
    for name in config.secrets_from_env:
        print(f"{name} (from the daemon's environment)")
    return 0
