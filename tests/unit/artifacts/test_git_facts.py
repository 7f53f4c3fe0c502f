"""What the artifact side asks git, on real repositories and real run
workspaces: the tags on a commit, the object ids of cache inputs, and the
tracked files of a workspace that differ from its commit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conveyor.daemon import vcs
from tests.support.repos import GitRepo, git, make_repo

FILES = {
    "conveyor.yaml": "name: p\nstages:\n  s:\n    run: 'true'\n",
    "src/shop/__init__.py": "",
    "src/shop/cart.py": "import os\n\n\ndef total(items):\n    return sum(items)\n",
    "README.md": "# shop\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return make_repo(tmp_path / "repo", FILES)


async def checked_out(repo: GitRepo, tmp_path: Path) -> tuple[Path, str]:
    commit = git("rev-parse", "HEAD", cwd=repo.path)
    workspace = tmp_path / "workspace"
    await vcs.checkout(repo.path, workspace, commit)
    return workspace, commit


async def test_a_fresh_workspace_equals_its_commit(repo: GitRepo, tmp_path: Path) -> None:
    workspace, commit = await checked_out(repo, tmp_path)
    assert await vcs.changed_files(workspace, commit) == []
    # files the build writes that git does not track do not count
    (workspace / "dist").mkdir()
    (workspace / "dist" / "shop.tar.gz").write_bytes(b"\x1f\x8b")
    assert await vcs.changed_files(workspace, commit) == []


async def test_modified_deleted_and_staged_files_are_named(repo: GitRepo, tmp_path: Path) -> None:
    workspace, commit = await checked_out(repo, tmp_path)
    cart = workspace / "src" / "shop" / "cart.py"
    cart.write_text(cart.read_text().replace("import os\n", ""))
    (workspace / "README.md").unlink()
    (workspace / "src" / "shop" / "extra.py").write_text("X = 1\n")
    git("add", "src/shop/extra.py", cwd=workspace)
    assert await vcs.changed_files(workspace, commit) == [
        "README.md",
        "src/shop/cart.py",
        "src/shop/extra.py",
    ]


async def test_the_same_content_written_again_is_no_change(repo: GitRepo, tmp_path: Path) -> None:
    workspace, commit = await checked_out(repo, tmp_path)
    cart = workspace / "src" / "shop" / "cart.py"
    cart.write_text(cart.read_text())  # a formatter that found nothing to change
    assert await vcs.changed_files(workspace, commit) == []


async def test_moving_head_does_not_hide_changes(repo: GitRepo, tmp_path: Path) -> None:
    first, commit = await checked_out(repo, tmp_path)
    repo.commit({"README.md": "# shop, second edition\n"})
    shutil.rmtree(first)
    workspace, _ = await checked_out(repo, tmp_path)
    # the workspace holds the second commit: compared with the first, README differs
    assert await vcs.changed_files(workspace, commit) == ["README.md"]


async def test_a_workspace_without_its_git_folder_cannot_be_compared(
    repo: GitRepo, tmp_path: Path
) -> None:
    workspace, commit = await checked_out(repo, tmp_path)
    shutil.rmtree(workspace / ".git")
    with pytest.raises(vcs.GitError):
        await vcs.changed_files(workspace, commit)


async def test_tags_on_the_commit_lightweight_and_annotated(repo: GitRepo) -> None:
    commit = git("rev-parse", "HEAD", cwd=repo.path)
    assert await vcs.commit_tags(repo.path, commit) == []
    git("tag", "v1.2.3", cwd=repo.path)
    git("tag", "-a", "v1.3.0", "-m", "release", cwd=repo.path)
    repo.commit({"README.md": "later\n"})
    git("tag", "v2.0.0", cwd=repo.path)
    assert await vcs.commit_tags(repo.path, commit) == ["refs/tags/v1.2.3", "refs/tags/v1.3.0"]


async def test_object_ids_of_paths_at_the_commit(repo: GitRepo) -> None:
    commit = git("rev-parse", "HEAD", cwd=repo.path)
    ids = await vcs.object_ids(repo.path, commit, ["src", "README.md", ".", "nope"])
    assert ids["src"] == git("rev-parse", f"{commit}:src", cwd=repo.path)
    assert ids["README.md"] == git("rev-parse", f"{commit}:README.md", cwd=repo.path)
    assert ids["."] == git("rev-parse", f"{commit}^{{tree}}", cwd=repo.path)
    assert ids["nope"] is None
    with pytest.raises(vcs.GitError, match="control characters"):
        await vcs.object_ids(repo.path, commit, ["a\nb"])
