"""The stage user: the unprivileged account local stages run as when the
daemon runs as root (setting ``stage_user``).

What it may touch is set up here, blocking (call it from a worker thread):

- its run's workspace: the folder belongs to the daemon's user and the
  stage user's group, mode 1770 (sticky: the stage user adds and removes
  its own files, not ``.git``); the checked-out files belong to the stage
  user; ``.git`` stays the daemon's, readable, so the stage can run git
  (:func:`stage_environment` marks that one folder ``safe.directory``) but
  cannot change what the daemon's own git commands would read;
- its attempt's reports folder and a home of its own per run
  (``workspaces/<run id>.home``);
- to reach them, the home and ``workspaces/`` are mode 0711: it can pass
  through, not list or read; the database, logs, keys and other files of
  the home stay 0600/0700.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from conveyor.daemon.executors.base import StageUser

#: Mode of the folders the stage user passes through (home, workspaces/).
TRAVERSE_MODE = 0o711
#: Mode of a run's workspace folder: sticky, the stage user's group may add.
WORKSPACE_MODE = 0o1770


class StageUserError(Exception):
    """The stage user cannot be used; the message says why and what to do."""


def resolve(name: str) -> StageUser:
    """The account called ``name`` (or with that uid). Raises
    :class:`StageUserError` when there is none, or it is root."""
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise StageUserError(
            f"stage_user {name!r}: no such user; create it with"
            f" `useradd --system --no-create-home --shell /usr/sbin/nologin {name}`"
            " (see docs/operations.md)"
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise StageUserError(
            f"stage_user {name!r} is root or in group root; use an unprivileged user"
        )
    return StageUser(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def _can_search(st: os.stat_result, user: StageUser) -> bool:
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == user.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def unreachable(folder: Path, user: StageUser) -> Path | None:
    """The first folder on the way to ``folder`` (itself included) that
    ``user`` cannot pass through, or None when it can reach it."""
    current = Path(folder.anchor)
    for part in folder.parts[1:]:
        if not _can_search(current.stat(), user):
            return current
        current = current / part
    return None if _can_search(current.stat(), user) else current


def open_for_traverse(folder: Path) -> None:
    """Make ``folder`` 0711 (others pass through, cannot list or read)."""
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode != TRAVERSE_MODE:
        folder.chmod(TRAVERSE_MODE)


def hand_over_workspace(workspace: Path, user: StageUser) -> None:
    """Give a fresh checkout to ``user`` (see the module's docstring)."""
    os.chown(workspace, os.geteuid(), user.gid)
    workspace.chmod(WORKSPACE_MODE)
    git_dir = workspace / ".git"
    for entry in os.scandir(workspace):
        path = Path(entry.path)
        if path == git_dir:
            _share_read_only(path)
        else:
            hand_over_tree(path, user)


def _share_read_only(root: Path) -> None:
    """Let everyone read ``root`` (a folder) and all in it; writable by its
    owner only."""
    root.chmod(0o755)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o755, follow_symlinks=False)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)


def hand_over_tree(root: Path, user: StageUser) -> None:
    """Make ``user`` the owner of ``root`` and all in it (symbolic links
    themselves, never what they point to). Nothing when it does not exist."""
    try:
        os.lchown(root, user.uid, user.gid)
    except FileNotFoundError:
        return
    if root.is_symlink() or not root.is_dir():
        return
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.lchown(os.path.join(folder, name), user.uid, user.gid)


def make_run_home(path: Path, user: StageUser) -> None:
    """A home of its own for the stage user during one run (mode 0700)."""
    path.mkdir(mode=0o700, exist_ok=True)
    os.chown(path, user.uid, user.gid)


def prepare_reports_dir(reports_root: Path, reports_dir: Path, user: StageUser) -> None:
    """Let ``user`` write to ``reports_dir`` (under ``reports_root``), if
    the stage kind made it: the folders above it 0711, it and all in it
    the user's. Called before each process of an attempt, since kinds make
    folders in it (as the daemon's user) between processes."""
    if not reports_dir.exists():
        return
    folder = reports_dir.parent
    while folder != reports_root.parent and folder.is_relative_to(reports_root):
        open_for_traverse(folder)
        folder = folder.parent
    hand_over_tree(reports_dir, user)


def stage_environment(user: StageUser, workspace: Path, run_home: Path) -> dict[str, str]:
    """Variables a stage gets as ``user``: its name and its run's home, and
    git's leave to use the workspace that belongs to the daemon's user
    (``safe.directory`` for that one folder, in the environment only)."""
    paths = list(dict.fromkeys([str(workspace), os.path.realpath(workspace)]))
    env = {
        "HOME": str(run_home),
        "USER": user.name,
        "LOGNAME": user.name,
        "GIT_CONFIG_COUNT": str(len(paths)),
    }
    for index, path in enumerate(paths):
        env[f"GIT_CONFIG_KEY_{index}"] = "safe.directory"
        env[f"GIT_CONFIG_VALUE_{index}"] = path
    return env
