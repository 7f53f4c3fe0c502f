"""`conveyor hook install|uninstall`: a post-receive hook that submits pushed refs."""

from __future__ import annotations

import os
import shlex
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from conveyor.client.errors import CommandError
from conveyor.client.gitinfo import Repository, find_repository

HOOK_NAME = "post-receive"
MARKER = "# Installed by Conveyor (conveyor hook install)."


def hook_script(
    *, python: str, address: str, repository: Path, pipeline_file: str | None = None
) -> str:
    """The post-receive script submitting a push-triggered run per updated ref."""
    file_option = f" --file {shlex.quote(pipeline_file)}" if pipeline_file else ""
    return f"""#!/bin/sh
{MARKER}
# Remove it with `conveyor hook uninstall`; reinstalling overwrites it.
# For every pushed ref (deletions excepted) it submits a Conveyor run.
status=0
while read -r oldrev newrev refname; do
    case "$newrev" in
        *[!0]*) ;;
        *) continue ;;
    esac
    {shlex.quote(python)} -m conveyor.client.cli --address {shlex.quote(address)} submit \\
        --repo {shlex.quote(str(repository))} --ref "$refname" --commit "$newrev" \\
        --trigger push --idempotency-key "push:$refname:$newrev"{file_option} || status=1
done
exit $status
"""


def is_conveyor_hook(path: Path) -> bool:
    try:
        return MARKER in path.read_text(errors="replace")
    except OSError:
        return False


def _repository(path: Path) -> Repository:
    repo = find_repository(path)
    if repo is None:
        raise CommandError(f"{path} is not a git repository")
    return repo


@dataclass(frozen=True)
class Installed:
    hook: Path
    backup: Path | None


def install(
    repo_path: Path,
    *,
    address: str,
    pipeline_file: str | None = None,
    force: bool = False,
    python: str | None = None,
) -> Installed:
    """Write the hook; refuses to replace a foreign hook unless `force` (then backs it up)."""
    repo = _repository(repo_path)
    hook = repo.hooks_dir / HOOK_NAME
    backup: Path | None = None
    if hook.exists() and not is_conveyor_hook(hook):
        if not force:
            raise CommandError(
                f"{hook} exists and was not written by Conveyor; use --force to replace it"
            )
        backup = hook.with_name(HOOK_NAME + ".conveyor-backup")
        os.replace(hook, backup)
    hook.parent.mkdir(parents=True, exist_ok=True)
    script = hook_script(
        python=python or sys.executable,
        address=address,
        repository=repo.root,
        pipeline_file=pipeline_file,
    )
    tmp = hook.with_name(HOOK_NAME + ".conveyor-tmp")
    tmp.write_text(script)
    mode = tmp.stat().st_mode
    tmp.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRUSR)
    os.replace(tmp, hook)
    return Installed(hook=hook, backup=backup)


@dataclass(frozen=True)
class Uninstalled:
    hook: Path | None
    restored: Path | None


def uninstall(repo_path: Path, *, force: bool = False) -> Uninstalled:
    """Remove the Conveyor hook, restoring the hook `install --force` backed up."""
    repo = _repository(repo_path)
    hook = repo.hooks_dir / HOOK_NAME
    if not hook.exists():
        return Uninstalled(hook=None, restored=None)
    if not is_conveyor_hook(hook) and not force:
        raise CommandError(
            f"{hook} was not written by Conveyor; leaving it (use --force to remove it)"
        )
    hook.unlink()
    backup = hook.with_name(HOOK_NAME + ".conveyor-backup")
    if backup.exists():
        os.replace(backup, hook)
        return Uninstalled(hook=hook, restored=backup)
    return Uninstalled(hook=hook, restored=None)
