"""A checkout the daemon writes itself (:mod:`conveyor.daemon.native_checkout`,
through :func:`vcs.checkout` with the kept git readers): the same work tree
and index git's own checkout makes, for the trees it takes; every other tree
left to git."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from conveyor.daemon import native_checkout, vcs
from tests.support.repos import GIT_ENV, GitRepo, add_script_and_link, git, make_repo


@pytest.fixture
async def readers() -> AsyncIterator[vcs.CatFiles]:
    kept = vcs.CatFiles()
    try:
        yield kept
    finally:
        await kept.aclose()


@pytest.fixture
def git_checkouts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commits git's own checkout (``read-tree``) wrote, spied on."""
    seen: list[str] = []
    real = vcs._read_tree

    async def spy(workspace: Path, commit: str) -> None:
        seen.append(commit)
        await real(workspace, commit)

    monkeypatch.setattr(vcs, "_read_tree", spy)
    return seen


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the kept git readers were asked for, spied on."""
    names: list[str] = []
    real = vcs._BatchReader.ask

    async def spy(self: vcs._BatchReader, name: str) -> None:
        names.extend(name.split("\n"))
        await real(self, name)

    monkeypatch.setattr(vcs._BatchReader, "ask", spy)
    return names


@pytest.fixture(autouse=True)
def forget_big_objects() -> Iterator[None]:
    native_checkout._too_big.clear()
    yield
    native_checkout._too_big.clear()


def _tree_of(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every path under ``root`` but ``.git``: its kind, mode and bytes
    (a link's target)."""
    found: dict[str, tuple[str, int, bytes]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if not (folder == str(root) and name == ".git")]
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                found[str(path.relative_to(root))] = ("link", 0, os.readlink(path).encode())
            elif stat.S_ISDIR(info.st_mode):
                found[str(path.relative_to(root))] = ("dir", mode, b"")
            else:
                found[str(path.relative_to(root))] = ("file", mode, path.read_bytes())
    return found


def _clean(workspace: Path) -> None:
    """git sees the work tree as the commit, from the index's stat data
    alone (``diff-files`` refreshes nothing) and in full (``status``)."""
    for argv in (["diff-files", "--quiet"], ["diff-index", "--quiet", "HEAD"]):
        result = subprocess.run(["git", *argv], cwd=workspace, env={**os.environ, **GIT_ENV})
        assert result.returncode == 0, f"git {' '.join(argv)} sees a change"
    assert git("status", "--porcelain", "--untracked-files=all", cwd=workspace) == ""


def _plain_repo(path: Path) -> tuple[GitRepo, str]:
    repo = make_repo(
        path,
        {
            "conveyor.yaml": "name: demo\n",
            ".gitignore": "build/\n",
            ".github/workflows/ci.yml": "on: push\n",
            "src/deep/module.py": "print('hi')\r\n",  # a CRLF, kept as it is
            "src/same.txt": "twice\n",
            "docs/same.txt": "twice\n",
            "empty": "",
        },
    )
    add_script_and_link(repo.path)
    os.symlink("../nowhere", repo.path / "src/dangling")
    return repo, repo.commit({"README": "read me\n"}, "a script and links")


async def test_the_daemon_writes_what_git_would(
    tmp_path: Path, readers: vcs.CatFiles, git_checkouts: list[str]
) -> None:
    repo, commit = _plain_repo(tmp_path / "repo")
    by_git, native = tmp_path / "by-git", tmp_path / "native"

    await vcs.checkout(repo.path, by_git, commit)
    assert git_checkouts == [commit]
    await vcs.checkout(repo.path, native, commit, readers=readers)
    assert git_checkouts == [commit], "the plain tree was written by the daemon"

    assert _tree_of(native) == _tree_of(by_git)
    assert _tree_of(native)["run.sh"][1] == 0o755
    assert _tree_of(native)["src/deep"] == ("dir", 0o755, b"")
    assert git("ls-files", "-s", cwd=native) == git("ls-files", "-s", cwd=by_git)
    assert git("rev-parse", "HEAD", cwd=native) == commit
    _clean(native)
    assert await vcs.changed_files(native, commit) == []
    (native / "src/same.txt").write_text("changed\n")
    assert await vcs.changed_files(native, commit) == ["src/same.txt"]


async def test_the_modes_are_the_stage_umasks_whatever_the_daemons(
    tmp_path: Path, readers: vcs.CatFiles
) -> None:
    """The daemon's umask is 077; the checkout's files have git's modes
    under the stage umask, whether written by a writer thread (a umask of
    its own) or by any other (each file given its mode), and what other
    threads make meanwhile keeps the daemon's umask."""
    repo, commit = _plain_repo(tmp_path / "repo")
    expected = {
        path: (kind, mode)
        for path, (kind, mode, _) in _tree_of(repo.path).items()
        if not path.startswith(".git/") and path != ".git"
    }
    kept = os.umask(0o077)
    try:
        await vcs.checkout(repo.path, tmp_path / "writer", commit, readers=readers)
        identity = vcs._identified_objects_dir(repo.path)
        async with readers.reader(repo.path, identity) as reader:
            files = await native_checkout.read(reader, commit, readers.objects, identity)
        assert files is not None
        await vcs.checkout(repo.path, tmp_path / "other", commit)  # its .git, as a checkout has it
        (tmp_path / "other/.git/index").unlink()
        for path in sorted(expected, reverse=True):
            target = tmp_path / "other" / path
            target.rmdir() if expected[path][0] == "dir" else target.unlink()
        await trio.to_thread.run_sync(native_checkout.write_tree, tmp_path / "other", files)
        made = tmp_path / "made-after"
        await trio.to_thread.run_sync(made.write_text, "x")
        assert os.umask(0o077) == 0o077
    finally:
        os.umask(kept)
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    for workspace in ("writer", "other"):
        tree = _tree_of(tmp_path / workspace)
        assert {path: (kind, mode) for path, (kind, mode, _) in tree.items()} == expected
        assert stat.S_IMODE((tmp_path / workspace / ".git/index").stat().st_mode) == 0o644
        _clean(tmp_path / workspace)


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ({".gitattributes": "*.txt text eol=crlf\n", "a.txt": "one\n"}, "attributes"),
        ({"deep/.gitattributes": "* ident\n", "deep/a": "$Id$\n"}, "attributes below"),
        ({"backup~": "x\n"}, "a name git checks on some file systems"),
        ({"caf\u00e9.txt": "x\n"}, "a name that is not ASCII"),
        ({"a:b": "x\n"}, "a colon"),
    ],
)
async def test_other_trees_go_to_git(
    tmp_path: Path,
    readers: vcs.CatFiles,
    git_checkouts: list[str],
    files: dict[str, str],
    why: str,
) -> None:
    repo = make_repo(tmp_path / "repo", files)
    commit = git("rev-parse", "HEAD", cwd=repo.path)
    await vcs.checkout(repo.path, tmp_path / "native", commit, readers=readers)
    await vcs.checkout(repo.path, tmp_path / "by-git", commit)
    assert git_checkouts == [commit, commit], why
    assert _tree_of(tmp_path / "native") == _tree_of(tmp_path / "by-git")
    _clean(tmp_path / "native")


async def test_a_submodule_goes_to_git(
    tmp_path: Path, readers: vcs.CatFiles, git_checkouts: list[str]
) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "x\n"})
    gitlink = git("rev-parse", "HEAD", cwd=repo.path)
    git("update-index", "--add", "--cacheinfo", f"160000,{gitlink},vendor/lib", cwd=repo.path)
    git("commit", "-q", "-m", "a submodule", cwd=repo.path)
    commit = git("rev-parse", "HEAD", cwd=repo.path)
    await vcs.checkout(repo.path, tmp_path / "native", commit, readers=readers)
    assert git_checkouts == [commit]
    assert git("ls-files", "-s", "vendor/lib", cwd=tmp_path / "native").startswith("160000")


async def test_big_trees_go_to_git_and_big_objects_are_remembered(
    tmp_path: Path,
    readers: vcs.CatFiles,
    git_checkouts: list[str],
    asked: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(native_checkout, "MAX_ENTRIES", 3)
    monkeypatch.setattr(native_checkout, "MAX_OBJECT_BYTES", 150)
    monkeypatch.setattr(native_checkout, "MAX_TOTAL_BYTES", 250)  # trees count too
    many = make_repo(tmp_path / "many", {f"d/f{i}": f"{i}\n" for i in range(4)})
    big = make_repo(tmp_path / "big", {"big": "x" * 151, "small": "y\n"})
    most = make_repo(tmp_path / "most", {"a": "a" * 100, "b": "b" * 100})
    small = make_repo(tmp_path / "small", {"a": "a" * 60, "b": "b" * 60})
    for repo in (many, big, most, small):
        commit = git("rev-parse", "HEAD", cwd=repo.path)
        await vcs.checkout(
            repo.path, repo.path.parent / f"{repo.path.name}-ws", commit, readers=readers
        )
        _clean(repo.path.parent / f"{repo.path.name}-ws")
    assert git_checkouts == [git("rev-parse", "HEAD", cwd=r.path) for r in (many, big, most)]
    big_blob = git("rev-parse", "HEAD:big", cwd=big.path)
    assert bytes.fromhex(big_blob) in native_checkout._too_big

    asked.clear()
    commit = git("rev-parse", "HEAD", cwd=big.path)
    identity = vcs._identified_objects_dir(big.path)
    async with readers.reader(big.path, identity) as reader:
        assert await native_checkout.read(reader, commit, readers.objects, identity) is None
    assert big_blob not in asked, "a blob known to be too big is not read again"
    # the reader is left ready for the next question
    async with readers.reader(big.path, vcs._identified_objects_dir(big.path)) as reader:
        await reader.ask(f"{commit}:small")
        header = await reader.header()
        assert await reader.body(int(header.split()[2])) == b"y\n"


async def test_an_unknown_commit_fails_as_gits_checkout_does(
    tmp_path: Path, readers: vcs.CatFiles, git_checkouts: list[str]
) -> None:
    repo = make_repo(tmp_path / "repo", {"a": "x\n"})
    with pytest.raises(vcs.GitError, match="checkout of 0123456789ab failed"):
        await vcs.checkout(repo.path, tmp_path / "ws", "0123456789ab" * 3 + "0123", readers=readers)
    assert len(git_checkouts) == 1


async def test_the_daemon_users_git_config_does_not_change_the_checkout(
    tmp_path: Path,
    readers: vcs.CatFiles,
    git_checkouts: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Line-ending conversion, links as files and global attributes in the
    daemon user's configuration would make the work tree differ from the
    commit: neither checkout applies them."""
    home = tmp_path / "home"
    (home / ".config/git").mkdir(parents=True)
    (home / ".gitconfig").write_text("[core]\n\tautocrlf = true\n\tsymlinks = false\n")
    (home / ".config/git/attributes").write_text("* text eol=crlf\n")
    repo, commit = _plain_repo(tmp_path / "repo")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    await vcs.checkout(repo.path, tmp_path / "native", commit, readers=readers)
    await vcs.checkout(repo.path, tmp_path / "by-git", commit)
    assert len(git_checkouts) == 1
    for workspace in ("native", "by-git"):
        tree = _tree_of(tmp_path / workspace)
        assert tree["README"] == ("file", 0o644, b"read me\n")
        assert tree["src/deep/module.py"][2] == b"print('hi')\r\n"
        assert tree["link.py"] == ("link", 0, b"src/deep/module.py")


def test_an_index_entry_is_padded_to_eight_bytes(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    info = (tmp_path / "f").stat()
    for name in (b"a", b"ab", b"abcdefgh", b"x" * 5000):
        entry = native_checkout.index_entry(name, 0o100644, b"\1" * 20, info)
        assert len(entry) % 8 == 0
        assert entry[62 : 62 + len(name)] == name
        assert entry[62 + len(name) :].strip(b"\0") == b""


async def test_a_path_that_names_another_repository_now_is_left_to_git(
    tmp_path: Path, readers: vcs.CatFiles, git_checkouts: list[str]
) -> None:
    """The tree is read through the process kept for the path; when the path
    names another repository by the time the workspace is made, what was
    read is not written: git checks out from what the path names now."""
    first = make_repo(tmp_path / "repo", {"a": "first\n"})
    commit = git("rev-parse", "HEAD", cwd=first.path)
    await vcs.checkout(first.path, tmp_path / "before", commit, readers=readers)
    assert git_checkouts == []
    first.path.rename(tmp_path / "moved")
    make_repo(tmp_path / "repo", {"a": "second\n"})
    with pytest.raises(vcs.GitError, match=f"checkout of {commit[:12]} failed"):
        await vcs.checkout(tmp_path / "repo", tmp_path / "after", commit, readers=readers)
    assert git_checkouts == [commit]
    assert not (tmp_path / "after" / "a").exists()


async def test_objects_read_once_are_not_asked_for_again(
    tmp_path: Path, readers: vcs.CatFiles, git_checkouts: list[str], asked: list[str]
) -> None:
    """The commit and the pipeline file read for a submit, and what a
    checkout reads, are kept: checking the same commit out again asks git
    nothing, and the next commit only for what changed."""
    repo, first = _plain_repo(tmp_path / "repo")
    await vcs.resolve(repo.path, "main", "conveyor.yaml", readers=readers)
    pipeline = git("rev-parse", f"{first}:conveyor.yaml", cwd=repo.path)
    assert asked[0] == "main^{commit}" and f"{first}:conveyor.yaml" in asked
    asked.clear()
    await vcs.checkout(repo.path, tmp_path / "one", first, readers=readers)
    assert f"{first}^{{tree}}" not in asked, "the kept commit names its tree"
    assert pipeline not in asked, "the pipeline file was kept"
    assert asked
    asked.clear()
    await vcs.checkout(repo.path, tmp_path / "two", first, readers=readers)
    assert asked == []
    second = repo.commit({"src/same.txt": "changed\n"})
    asked.clear()
    await vcs.checkout(repo.path, tmp_path / "three", second, readers=readers)
    changed = {
        git("rev-parse", f"{second}:{path}", cwd=repo.path) for path in ("src", "src/same.txt")
    }
    assert set(asked) == {f"{second}^{{tree}}"} | changed, "the root tree, then what changed"
    assert git_checkouts == []
    _clean(tmp_path / "three")
    assert (tmp_path / "three/src/same.txt").read_text() == "changed\n"


def test_the_object_cache_keeps_the_most_recently_used_within_its_bound() -> None:
    cache = native_checkout.ObjectCache(limit=800)
    cache.put("repo", b"a", b"blob", b"x" * 100)
    cache.put("repo", b"big", b"blob", b"x" * 101)  # over an eighth: not kept
    cache.put("other", b"a", b"blob", b"y" * 100)
    assert cache.get("other", b"a") == (b"blob", b"y" * 100), "repositories apart"
    assert cache.get("repo", b"a") == (b"blob", b"x" * 100)
    assert cache.get("repo", b"big") is None
    for name in (b"b", b"c", b"d", b"e", b"f"):
        cache.put("repo", name, b"blob", b"z" * 100)
    cache.get("repo", b"a")  # used again: the most recent
    for name in (b"g", b"h", b"i"):
        cache.put("repo", name, b"blob", b"z" * 100)
    assert cache.size == 800
    assert cache.get("other", b"a") is None and cache.get("repo", b"b") is None
    assert None not in (cache.get("repo", b"c"), cache.get("repo", b"a"), cache.get("repo", b"i"))
