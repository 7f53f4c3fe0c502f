"""The git processes kept between submits (:class:`vcs.CatFiles`): one per
repository, answering as a new one would, replaced when the path names
another repository or the process fails."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from conveyor.daemon import vcs
from conveyor.daemon.errors import NotFound
from tests.support.repos import git, make_repo


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The repositories a cat-file process was started for, in order."""
    opened: list[Path] = []
    open_cat_file = vcs._open_cat_file

    async def counting(repo: Path) -> trio.Process:
        opened.append(repo)
        return await open_cat_file(repo)

    monkeypatch.setattr(vcs, "_open_cat_file", counting)
    return opened


async def test_one_process_answers_every_submit_and_sees_new_commits(
    tmp_path: Path, started: list[Path]
) -> None:
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": "name: a\n"})
    readers = vcs.CatFiles()
    try:
        first = await vcs.resolve(repo.path, "main", "conveyor.yaml", readers=readers)
        second_commit = repo.commit({"conveyor.yaml": "name: b\n"})
        git("tag", "v1.0.0", cwd=repo.path)
        git("pack-refs", "--all", cwd=repo.path)
        second = await vcs.resolve(repo.path, "main", "conveyor.yaml", readers=readers)
        tagged = await vcs.resolve(repo.path, "v1.0.0", "conveyor.yaml", readers=readers)
        with pytest.raises(NotFound):
            await vcs.resolve(repo.path, "nope", "conveyor.yaml", readers=readers)
        after_error = await vcs.resolve(repo.path, "main", "conveyor.yaml", readers=readers)
    finally:
        await readers.aclose()
    assert first.pipeline_text == "name: a\n"
    assert second.commit == second_commit != first.commit
    assert second.pipeline_text == "name: b\n"
    assert tagged.commit == second_commit and tagged.ref_type == "tag"
    assert after_error.commit == second_commit
    assert started == [repo.path], "one process served every question"


async def test_another_repository_at_the_same_path_gets_a_new_process(
    tmp_path: Path, started: list[Path]
) -> None:
    path = tmp_path / "repo"
    make_repo(path, {"conveyor.yaml": "name: old\n"})
    readers = vcs.CatFiles()
    try:
        old = await vcs.resolve(path, "main", "conveyor.yaml", readers=readers)
        kept = readers.identity_of(path)
        await trio.to_thread.run_sync(shutil.rmtree, path)
        make_repo(path, {"conveyor.yaml": "name: new\n", "other": "x"})
        # The new object folder may get the old one's inode back; the kept
        # process's working folder, the old top folder, keeps its inode.
        now = vcs._identified_objects_dir(path)
        assert kept is not None and (now.top_device, now.top_inode) != kept[3:]
        new = await vcs.resolve(path, "main", "conveyor.yaml", readers=readers)
    finally:
        await readers.aclose()
    assert old.pipeline_text == "name: old\n" and new.pipeline_text == "name: new\n"
    assert new.commit != old.commit
    assert started == [path, path]


async def test_idle_processes_are_closed(tmp_path: Path, started: list[Path]) -> None:
    one = make_repo(tmp_path / "one", {"conveyor.yaml": "name: one\n"})
    two = make_repo(tmp_path / "two", {"conveyor.yaml": "name: two\n"})
    readers = vcs.CatFiles(idle=0.0)
    try:
        await vcs.resolve(one.path, "main", "conveyor.yaml", readers=readers)
        kept = readers._kept[one.path].proc
        await trio.sleep(0.01)
        await vcs.resolve(two.path, "main", "conveyor.yaml", readers=readers)
        assert kept.returncode is not None, "the idle process was ended"
        assert list(readers._kept) == [two.path]
    finally:
        await readers.aclose()


async def test_the_release_tags_of_the_commit_are_read_with_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": "name: a\n"})
    first = git("rev-parse", "HEAD", cwd=repo.path)
    git("tag", "v0.9.0", cwd=repo.path)  # on the first commit only
    second = repo.commit({"README": "x"})
    git("tag", "v1.0.0", cwd=repo.path)  # lightweight
    git("tag", "-a", "-m", "release", "1.1.0", cwd=repo.path)  # annotated
    git("tag", "-a", "-m", "rc", "v2.0.0-rc.1", cwd=repo.path)
    git("tag", "nightly", cwd=repo.path)  # not a version
    git("pack-refs", "--all", cwd=repo.path)  # those are packed, peeled
    git("tag", "-a", "-m", "loose", "v1.2.0", cwd=repo.path)  # loose, annotated
    git("tag", "v1.3.0", first, cwd=repo.path)  # loose, elsewhere
    readers = vcs.CatFiles()
    try:
        revision = await vcs.resolve(repo.path, "main", "conveyor.yaml", readers=readers)
    finally:
        await readers.aclose()
    assert revision.commit == second
    expected = [
        tag
        for tag in await vcs.commit_tags(repo.path, second)
        if tag.removeprefix("refs/tags/")[:1].isdigit() or tag.startswith("refs/tags/v")
    ]
    assert sorted(expected) == [
        "refs/tags/1.1.0",
        "refs/tags/v1.0.0",
        "refs/tags/v1.2.0",
        "refs/tags/v2.0.0-rc.1",
    ]
    assert list(revision.release_tags or ()) == sorted(expected)


async def test_without_kept_readers_the_tags_are_left_for_the_run_to_read(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": "name: a\n"})
    git("tag", "v1.0.0", cwd=repo.path)
    revision = await vcs.resolve(repo.path, "main", "conveyor.yaml")
    assert revision.release_tags is None


@pytest.mark.parametrize(
    ("ref", "ref_type"), [("main", "branch"), ("v1.0.0", "tag"), ("refs/heads/main", "branch")]
)
async def test_a_submit_asks_git_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: str, ref_type: str
) -> None:
    """The commit and what a short ref name is (a tag, a branch) in one
    write to git, then the pipeline file at that commit."""
    repo = make_repo(tmp_path / "repo", {"conveyor.yaml": "name: a\n"})
    git("tag", "v1.0.0", cwd=repo.path)
    writes: list[str] = []
    ask = vcs._BatchReader.ask

    async def counting(self: vcs._BatchReader, name: str) -> None:
        writes.append(name)
        await ask(self, name)

    monkeypatch.setattr(vcs._BatchReader, "ask", counting)
    readers = vcs.CatFiles()
    try:
        revision = await vcs.resolve(repo.path, ref, "conveyor.yaml", readers=readers)
    finally:
        await readers.aclose()
    assert revision.ref_type == ref_type
    assert revision.commit == git("rev-parse", "HEAD", cwd=repo.path)
    asked = [name for write in writes for name in write.split("\n")]
    assert asked[0] == f"{ref}^{{commit}}"
    assert writes[1] == f"{revision.commit}:conveyor.yaml"
    # then only the release tag that may point at the commit, if any
    assert all(name.startswith(("refs/tags/v1.0.0", "v1.0.0")) for name in writes[2:]), writes
