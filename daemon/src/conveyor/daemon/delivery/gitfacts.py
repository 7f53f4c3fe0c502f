"""What a deployment learns from git: a file at the artifact's commit (the
``env_file``), the commit's time, and the commits between two deployments.
Git runs as trio subprocesses."""

from __future__ import annotations

import os
import re

import trio

from conveyor.daemon.delivery.records import MAX_COMMITS, Commit

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
#: Largest env file read, in bytes.
MAX_ENV_FILE = 256 * 1024


class GitFactError(Exception):
    """Git could not answer; the message has git's words."""


async def _git(repo: str, *args: str) -> bytes:
    try:
        result = await trio.run_process(
            ["git", "-C", repo, *args],
            env={**_git_env(), **_GIT_ENV},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    except OSError as exc:
        raise GitFactError(f"cannot run git: {exc.strerror or exc}") from None
    if result.returncode != 0:
        why = result.stderr[:2000].decode(errors="replace").strip()
        raise GitFactError(why or f"git {args[0]} exited with {result.returncode}")
    return bytes(result.stdout)


def _git_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}


async def file_at(repo: str, commit: str, path: str) -> bytes | None:
    """The bytes of ``path`` at ``commit`` (None when it does not exist there).
    Raises :class:`GitFactError` when git cannot read the repository or the
    file is larger than :data:`MAX_ENV_FILE`."""
    try:
        size = await _git(repo, "cat-file", "-s", f"{commit}:{path}")
    except GitFactError:
        return None
    if int(size.strip() or 0) > MAX_ENV_FILE:
        raise GitFactError(f"{path} is larger than {MAX_ENV_FILE} bytes")
    return await _git(repo, "cat-file", "blob", f"{commit}:{path}")


async def commit_time(repo: str, commit: str) -> float | None:
    """The commit's committer time (Unix seconds); None when git cannot say."""
    if not _SHA_RE.match(commit):
        return None
    try:
        out = await _git(repo, "show", "-s", "--format=%ct", commit)
    except GitFactError:
        return None
    text = out.decode().strip()
    return float(text) if text.isdigit() else None


async def commits_between(repo: str, old: str, new: str) -> tuple[list[Commit], int]:
    """The commits in ``old..new`` (newest first, at most :data:`MAX_COMMITS`)
    and how many there are in all; ``([], 0)`` when git cannot say (a
    repository that is gone, an unknown commit)."""
    if not (_SHA_RE.match(old) and _SHA_RE.match(new)) or old == new:
        return [], 0
    try:
        count = await _git(repo, "rev-list", "--count", f"{old}..{new}")
        out = await _git(
            repo, "log", f"--max-count={MAX_COMMITS}", "--format=%H%x00%s", f"{old}..{new}"
        )
    except GitFactError:
        return [], 0
    commits = []
    for line in out.decode(errors="replace").splitlines():
        sha, _, subject = line.partition("\0")
        if sha:
            commits.append(Commit(sha, subject))
    return commits, int(count.decode().strip() or 0)
