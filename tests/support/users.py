"""Local users for tests that need another account than root.

:func:`system_user` gives the stage user the isolation tests run stages as
(made when missing, removed afterwards if the test made it);
:func:`local_user` makes a throwaway user, and :func:`run_as` runs Python as
it. Needs root (the tests run as root here and in CI); without it the tests
that use these skip. The Python interpreter may live where another user
cannot read (``/root/.pyenv``), so :func:`run_as` starts it as root, lets it
import what it needs, and only then drops to the user's uid and gid.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

#: The stage user the isolation tests run stages as.
STAGE_USER = "conveyor-stage"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: only root can run stages as another user")


@contextlib.contextmanager
def system_user(name: str) -> Iterator[pwd.struct_passwd]:
    """The account ``name``: a system user without a home or login shell,
    made for the test if it does not exist (and then removed after it,
    unless the tests run on several xdist workers that may share it)."""
    require_root()
    try:
        yield pwd.getpwnam(name)
        return
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed: cannot create the stage user")
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
    )
    try:
        entry = pwd.getpwnam(name)  # made here, or by another xdist worker just now
    except KeyError:
        raise RuntimeError(f"useradd {name} failed: {made.stderr.strip()}") from None
    try:
        yield entry
    finally:
        # Under pytest-xdist another worker may be running stages as this
        # account right now (its own fixture found it made): it stays.
        if "PYTEST_XDIST_WORKER" not in os.environ:
            subprocess.run(["userdel", name], check=False, capture_output=True)


#: Imported before the privileges are dropped; then the script runs.
_PRELUDE = """
import errno, json, os, socket, sys
import grpc
# grpc imports these lazily, on first use: import them while the files are
# still readable (a checkout under a 0700 folder is not, to the user)
from grpc import _auth, _channel, _interceptor, _plugin_wrapping, _utilities
from conveyor.v1 import auth_pb2, runs_pb2, server_pb2, service_pb2_grpc
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
assert os.getuid() == uid and os.geteuid() == uid
"""


@contextlib.contextmanager
def local_user() -> Iterator[pwd.struct_passwd]:
    """A new user with its own group and no home, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating another local user needs root")
    name = f"cvt{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def run_as(user: pwd.struct_passwd, script: str, *args: str, timeout: float = 60) -> Any:
    """Run ``script`` (Python; gRPC, the Conveyor stubs, ``socket`` and
    ``errno`` imported; ``args`` in ``sys.argv[3:]``) as ``user``; it prints
    one JSON value, returned."""
    result = subprocess.run(
        [sys.executable, "-c", _PRELUDE + script, str(user.pw_uid), str(user.pw_gid), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HOME": "/nonexistent"},
    )
    if result.returncode != 0:
        raise AssertionError(f"script as {user.pw_name} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])
