"""A run's checkout (:func:`vcs.checkout`): the commit's files as git itself
would check them out (checkout filters, modes, links), a clean work tree
at a detached HEAD, the repository's tags, and a workspace made anew."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conveyor.daemon import vcs
from conveyor.daemon.spare_workspaces import SpareWorkspaces
from tests.support.repos import add_script_and_link, git, make_repo


@pytest.mark.parametrize("spare", [False, True], ids=["made", "spare"])
@pytest.mark.parametrize("packed", [False, True], ids=["loose-tags", "packed-tags"])
async def test_the_workspace_is_the_commit_as_git_checks_it_out(
    tmp_path: Path, spare: bool, packed: bool
) -> None:
    """Alike whether the checkout starts from a spare workspace or makes
    its own, with tags loose or packed."""
    repo = make_repo(
        tmp_path / "repo",
        {
            ".gitattributes": "*.txt text eol=crlf\n*.id ident\n",
            "notes.txt": "one\ntwo\n",
            "file.id": "$Id$\n",
            "src/deep/module.py": "print('hi')\n",
        },
    )
    add_script_and_link(repo.path)
    commit = repo.commit({"README": "read me\n"}, "a script and a link")
    git("tag", "v1.2.3", cwd=repo.path)
    if packed:
        git("pack-refs", "--all", cwd=repo.path)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "left-over").write_text("from an earlier run\n")
    spares = SpareWorkspaces(tmp_path / "spares", keep=1) if spare else None
    if spares is not None:
        spares.reset()
        assert spares.ready == 1

    await vcs.checkout(repo.path, workspace, commit, spares=spares)
    if spares is not None:
        assert spares.ready == 0, "the checkout took the spare"

    assert not (workspace / "left-over").exists()
    assert (workspace / "notes.txt").read_bytes() == b"one\r\ntwo\r\n"
    blob = git("rev-parse", f"{commit}:file.id", cwd=repo.path)
    assert (workspace / "file.id").read_text() == f"$Id: {blob} $\n"
    assert (workspace / "src/deep/module.py").read_text() == "print('hi')\n"
    assert stat.S_IMODE((workspace / "run.sh").stat().st_mode) & 0o111
    assert os.readlink(workspace / "link.py") == "src/deep/module.py"
    assert git("rev-parse", "HEAD", cwd=workspace) == commit
    assert git("status", "--porcelain", "--untracked-files=all", cwd=workspace) == ""
    assert git("describe", "--tags", cwd=workspace) == "v1.2.3"
    assert await vcs.changed_files(workspace, commit) == []
