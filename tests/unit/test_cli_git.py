"""Tests for the CLI's git checkout detection (`conveyor submit` defaults)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conveyor.client.errors import CommandError
from conveyor.client.gitinfo import detect_checkout, find_repository, resolve_target


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "work"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "conveyor.yaml").write_text("name: ci\n")
    (repo / "src").mkdir()
    (repo / "src" / "app.py").write_text("print('hi')\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def test_detects_branch_commit_and_clean_tree(checkout: Path) -> None:
    info = detect_checkout(checkout / "src")
    assert info is not None
    assert info.root == checkout.resolve()
    assert info.branch == "main"
    assert info.commit == git(checkout, "rev-parse", "HEAD")
    assert info.ref == "main"
    assert not info.dirty


def test_detects_uncommitted_changes(checkout: Path) -> None:
    (checkout / "src" / "app.py").write_text("print('changed')\n")
    info = detect_checkout(checkout)
    assert info is not None and info.dirty


def test_detached_head_uses_the_commit(checkout: Path) -> None:
    head = git(checkout, "rev-parse", "HEAD")
    git(checkout, "checkout", "-q", "--detach")
    info = detect_checkout(checkout)
    assert info is not None
    assert info.branch is None
    assert info.ref == head


def test_outside_a_checkout(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert detect_checkout(plain) is None
    with pytest.raises(CommandError, match="not inside a git working tree"):
        resolve_target(None, None, None, plain)


def test_resolve_defaults_to_branch_and_head(checkout: Path) -> None:
    target = resolve_target(None, None, None, checkout / "src")
    assert target.repository == str(checkout.resolve())
    assert target.ref == "main"
    assert target.commit == git(checkout, "rev-parse", "HEAD")
    assert target.warning is None


def test_resolve_warns_about_uncommitted_changes(checkout: Path) -> None:
    (checkout / "new.txt").write_text("x\n")
    target = resolve_target(None, None, None, checkout)
    head = git(checkout, "rev-parse", "HEAD")
    assert target.warning == f"runs commit {head[:10]}; uncommitted changes are not included"


def test_resolve_explicit_ref_sends_no_commit(checkout: Path) -> None:
    target = resolve_target(None, "v1.0", None, checkout)
    assert (target.ref, target.commit, target.warning) == ("v1.0", "", None)


def test_resolve_explicit_repo_ref_and_commit_skip_git(tmp_path: Path) -> None:
    # What the post-receive hook sends: no git repository needs to be around.
    target = resolve_target("srv/app.git", "refs/heads/main", "abc123", tmp_path)
    assert target.repository == str((tmp_path / "srv/app.git").resolve())
    assert (target.ref, target.commit) == ("refs/heads/main", "abc123")


def test_resolve_commit_alone_is_the_ref(tmp_path: Path) -> None:
    target = resolve_target(str(tmp_path), None, "abc123", tmp_path)
    assert (target.ref, target.commit) == ("abc123", "abc123")


def test_resolve_bare_repository_head(checkout: Path, tmp_path: Path) -> None:
    bare = tmp_path / "app.git"
    git(tmp_path, "clone", "-q", "--bare", str(checkout), str(bare))
    target = resolve_target(str(bare), None, None, tmp_path)
    assert target.repository == str(bare.resolve())
    assert target.ref == "main"
    assert target.commit == git(checkout, "rev-parse", "HEAD")


def test_resolve_url_needs_a_ref(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--ref is required"):
        resolve_target("file:///srv/app.git", None, None, tmp_path)
    target = resolve_target("file:///srv/app.git", "main", None, tmp_path)
    assert (target.repository, target.ref) == ("file:///srv/app.git", "main")


def test_find_repository(checkout: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    found = find_repository(bare)
    assert found is not None and found.bare and found.root == bare.resolve()
    assert found.hooks_dir == bare.resolve() / "hooks"
    work = find_repository(checkout)
    assert work is not None and not work.bare
    assert work.hooks_dir == checkout.resolve() / ".git" / "hooks"
    assert find_repository(checkout / "src") is None  # inside, but not the repository
    assert find_repository(bare / "hooks") is None
    assert find_repository(tmp_path / "missing") is None
