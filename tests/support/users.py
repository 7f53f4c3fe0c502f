"""Local users for tests that need another account than root: created
with ``useradd`` when missing, removed afterwards if the test made them."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

#: The stage user the isolation tests run stages as.
STAGE_USER = "conveyor-stage"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: only root can run stages as another user")


@contextmanager
def system_user(name: str) -> Iterator[pwd.struct_passwd]:
    """The account ``name``: a system user without a home or login shell,
    made for the test if it does not exist (and then removed after it)."""
    require_root()
    try:
        yield pwd.getpwnam(name)
        return
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed: cannot create the stage user")
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
