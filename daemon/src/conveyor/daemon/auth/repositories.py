"""Which repositories a caller may make the daemon build.

An admin may build any. Anyone else only repositories whose *real* path
(every symlink and ``..`` resolved) lies in one of its folders (the access
file's ``repositories`` for its identity, or its token's), so neither a
symlink nor ``../`` leads the daemon outside them. The repository is then
read through its real path, and checked again after it was read: a
directory swapped for a symlink in between makes the submit fail.
"""

from __future__ import annotations

import os
from pathlib import Path

from conveyor.daemon.auth.identity import Principal
from conveyor.daemon.errors import FailedPrecondition, PermissionDenied


def allowed_repository(principal: Principal, path: Path) -> Path:
    """The path to read the repository at ``path`` through (blocking:
    resolves it). Raises PermissionDenied naming the caller's folders."""
    if principal.any_repository:
        return path
    real = os.path.realpath(path)
    if principal.may_build(real):
        return Path(real)
    resolved = f" (its real path is {real})" if real != str(path) else ""
    if principal.repositories:
        folders = f"its repository folders are {', '.join(principal.repositories)}"
    else:
        folders = (
            "it has no repository folders (set `repositories` for its identity in the access"
            " file, or issue its token with --repository)"
        )
    raise PermissionDenied(
        f"{principal.describe()} may not build the repository {path}{resolved}: {folders}",
        field="repository",
    )


def check_unchanged(principal: Principal, real: Path) -> None:
    """After reading: the real path still resolves to itself (blocking).
    Raises FailedPrecondition if something was swapped meanwhile."""
    if principal.any_repository:
        return
    if os.path.realpath(real) != str(real):
        raise FailedPrecondition(
            f"the repository {real} changed (a folder became a symlink) while it was read;"
            " submit again",
            field="repository",
        )
