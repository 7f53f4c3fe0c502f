"""What `conveyor submit` learns from the local git checkout."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from conveyor.client.errors import CommandError


def git(path: Path, *args: str) -> str | None:
    """Stdout of `git -C path args...`, stripped; None when git fails or is missing."""
    try:
        result = subprocess.run(
            ["git", "-C", str(path), *args],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip()


@dataclass(frozen=True)
class Checkout:
    """A git working tree: its top folder, branch (None when detached), HEAD commit."""

    root: Path
    branch: str | None
    commit: str | None
    dirty: bool

    @property
    def ref(self) -> str | None:
        """The branch, or the commit when HEAD is detached."""
        return self.branch or self.commit


def detect_checkout(path: Path) -> Checkout | None:
    """The working tree containing `path`, or None outside one (or in a bare repo)."""
    top = git(path, "rev-parse", "--show-toplevel")
    if not top:
        return None
    root = Path(top)
    branch = git(root, "symbolic-ref", "-q", "--short", "HEAD") or None
    commit = git(root, "rev-parse", "--verify", "-q", "HEAD") or None
    status = git(root, "status", "--porcelain")
    return Checkout(root=root, branch=branch, commit=commit, dirty=bool(status))


@dataclass(frozen=True)
class Repository:
    """A git repository given by its own folder (bare, or a working tree's top)."""

    root: Path
    git_dir: Path
    bare: bool

    @property
    def hooks_dir(self) -> Path:
        hooks = git(self.root, "rev-parse", "--git-path", "hooks")
        return (self.root / hooks).resolve() if hooks else self.git_dir / "hooks"


def find_repository(path: Path) -> Repository | None:
    """The repository whose folder is exactly `path` (not one merely containing it)."""
    path = path.resolve()
    if not path.is_dir():
        return None
    git_dir = git(path, "rev-parse", "--absolute-git-dir")
    if not git_dir:
        return None
    bare = git(path, "rev-parse", "--is-bare-repository") == "true"
    if bare:
        root = Path(git_dir).resolve()
    else:
        top = git(path, "rev-parse", "--show-toplevel")
        if not top:
            return None
        root = Path(top).resolve()
    if root != path:
        return None
    return Repository(root=root, git_dir=Path(git_dir).resolve(), bare=bare)


@dataclass(frozen=True)
class SubmitTarget:
    """What `conveyor submit` sends: repository, ref, optional commit, and a warning."""

    repository: str
    ref: str
    commit: str
    warning: str | None = None


def resolve_target(
    repo: str | None, ref: str | None, commit: str | None, cwd: Path
) -> SubmitTarget:
    """Fill in what `submit` was not given from the git checkout at `repo` (or `cwd`).

    With an explicit ref or commit nothing but the repository's folder is looked
    up, so the post-receive hook does not depend on the checkout it runs in.
    """
    if repo and "://" in repo:  # a URL: nothing to inspect locally
        if not (ref or commit):
            raise CommandError("--ref is required when --repo is a URL")
        return SubmitTarget(repo, ref or commit or "", commit or "")
    path = (cwd / Path(repo).expanduser()) if repo else cwd
    checkout = detect_checkout(path) if repo is None or not (ref or commit) else None
    if repo is None and checkout is None:
        raise CommandError("not inside a git working tree: use --repo PATH")
    repository = str(checkout.root if checkout else path.resolve())
    if ref or commit:
        return SubmitTarget(repository, ref or commit or "", commit or "")
    if checkout is not None:
        branch, head, dirty = checkout.branch, checkout.commit, checkout.dirty
    else:  # a bare repository (or not a repository at all)
        branch = git(path, "symbolic-ref", "-q", "--short", "HEAD") or None
        head = git(path, "rev-parse", "--verify", "-q", "HEAD") or None
        dirty = False
    if not head:
        raise CommandError(f"cannot find a commit to run in {repository}: use --ref")
    warning = None
    if dirty:
        warning = f"runs commit {head[:10]}; uncommitted changes are not included"
    return SubmitTarget(repository, branch or head, head, warning)
