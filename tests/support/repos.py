"""Real git repositories made in a temporary folder."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Conveyor Tests",
    "GIT_AUTHOR_EMAIL": "tests@conveyor.invalid",
    "GIT_COMMITTER_NAME": "Conveyor Tests",
    "GIT_COMMITTER_EMAIL": "tests@conveyor.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


@dataclass
class GitRepo:
    path: Path

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        """Write files, commit them, and return the commit id."""
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        git("add", "-A", cwd=self.path)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.path)
        return git("rev-parse", "HEAD", cwd=self.path)


def add_script_and_link(path: Path) -> None:
    """An executable ``run.sh`` and a link ``link.py`` to ``src/deep/module.py``
    in the work tree at ``path`` (not committed)."""
    (path / "run.sh").write_text("#!/bin/sh\ntrue\n")
    (path / "run.sh").chmod(0o755)
    os.symlink("src/deep/module.py", path / "link.py")


def make_repo(path: Path, files: dict[str, str], branch: str = "main") -> GitRepo:
    path.mkdir(parents=True)
    git("init", "-q", "-b", branch, cwd=path)
    repo = GitRepo(path)
    repo.commit(files, "initial")
    return repo
