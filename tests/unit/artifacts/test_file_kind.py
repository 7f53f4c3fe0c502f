"""The ``file`` stage kind in-process: it builds, collects exactly one file,
keeps it by digest in the store, and says what matched when that fails."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import stat
from pathlib import Path

import pytest

from conveyor.plugin import FILE, Artifact, StageSpec, StageStatus
from conveyor.plugins.file import FileNotCollected, FileStage, find_one, store_file
from tests.support.plugins import stage_context


def test_one_file_matches(tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "shop-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "dist" / "shop-1.0.tar.gz").write_bytes(b"sdist")
    assert find_one(tmp_path, "dist/*.whl") == tmp_path / "dist" / "shop-1.0-py3-none-any.whl"


def test_no_match_or_several_say_what_was_found(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotCollected, match=re.escape("'dist/*.whl' matched no file in the workspace")
    ):
        find_one(tmp_path, "dist/*.whl")
    (tmp_path / "dist").mkdir()
    for name in ("a.whl", "b.whl"):
        (tmp_path / "dist" / name).write_bytes(b"x")
    with pytest.raises(FileNotCollected) as info:
        find_one(tmp_path, "dist/*.whl")
    assert str(info.value).startswith(
        "with.path 'dist/*.whl' matched 2 files: dist/a.whl, dist/b.whl; it must match exactly one"
    )


def test_a_link_out_of_the_workspace_is_not_collected(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "dist").mkdir(parents=True)
    (tmp_path / "secret").write_text("not yours")
    os.symlink(tmp_path / "secret", workspace / "dist" / "app.whl")
    with pytest.raises(
        FileNotCollected, match=re.escape("links to outside the workspace: dist/app.whl")
    ):
        find_one(workspace, "dist/*.whl")


def test_the_store_keeps_one_read_only_copy_per_digest(tmp_path: Path) -> None:
    source = tmp_path / "app.tar"
    source.write_bytes(b"x" * 3_000_000)
    store = tmp_path / "store"
    first = store_file(source, store)
    expected = hashlib.sha256(b"x" * 3_000_000).hexdigest()
    assert first.digest == f"sha256:{expected}"
    assert first.size == 3_000_000
    assert first.path == store / "sha256" / expected
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o444
    again = store_file(source, store)
    assert again == first
    assert list((store / "tmp").iterdir()) == []


async def test_the_kind_builds_and_returns_a_file_artifact(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    stage = {
        "uses": "file",
        "run": ["mkdir -p dist", "printf 'built' > dist/shop-1.0.tar.gz"],
        "with": {"path": "dist/*.tar.gz"},
    }
    ctx, _ = stage_context(stage, workspace, tmp_path)
    ctx = dataclasses.replace(ctx, version="1.0.0", artifact_store=tmp_path / "artifacts")
    kind = FileStage()
    assert list(kind.validate(ctx.spec)) == []
    outcome = await kind.run(ctx)
    assert outcome.status is StageStatus.SUCCEEDED
    (artifact,) = outcome.artifacts
    digest = hashlib.sha256(b"built").hexdigest()
    assert (artifact.kind, artifact.name, artifact.digest, artifact.size, artifact.tags) == (
        FILE,
        "shop-1.0.tar.gz",
        f"sha256:{digest}",
        5,
        ("1.0.0",),
    )
    assert artifact.media_type == "application/gzip"
    assert artifact.attributes == {
        "path": "dist/shop-1.0.tar.gz",
        "stored_at": str(tmp_path / "artifacts" / "sha256" / digest),
    }


async def test_a_failing_build_or_a_missing_file_fails_the_stage(tmp_path: Path) -> None:
    ctx, _ = stage_context(
        {"uses": "file", "run": "exit 4", "with": {"path": "x"}}, tmp_path, tmp_path
    )
    outcome = await FileStage().run(dataclasses.replace(ctx, artifact_store=tmp_path / "a"))
    assert (outcome.status, outcome.reason) == (StageStatus.FAILED, "exit code 4")
    ctx, _ = stage_context({"uses": "file", "with": {"path": "dist/*.whl"}}, tmp_path, tmp_path)
    outcome = await FileStage().run(dataclasses.replace(ctx, artifact_store=tmp_path / "a"))
    assert outcome.status is StageStatus.FAILED
    assert outcome.error_type == "no_file"
    assert "matched no file" in outcome.reason


@pytest.mark.parametrize(
    ("with_", "problem"),
    [
        ({}, ("with.path", "required parameter 'path' is missing")),
        ({"path": "/tmp/x"}, ("with.path", "'/tmp/x': must be relative to the repository root")),
        ({"path": "../x"}, ("with.path", "'../x': must stay inside the repository (no '..')")),
        ({"path": "x", "paht": 1}, ("with.paht", "unknown parameter 'paht'; the file kind")),
    ],
)
def test_parameters_are_checked_at_load_time(
    with_: dict[str, object], problem: tuple[str, str]
) -> None:
    (found,) = FileStage().validate(StageSpec.model_validate({"uses": "file", "with": with_}))
    assert found[0] == problem[0]
    assert found[1].startswith(problem[1])


def stored_artifact(digest: str, size: int, stored_at: Path) -> Artifact:
    return Artifact(
        digest=digest, kind=FILE, name="a.txt", version="", tags=(), size=size, media_type="",
        repository="", ref="", commit="", pipeline="", run_id="", run_number=0, stage="",
        stages=(), created_at=0.0, trace_id="", span_id="", pushed_to=(), manifest_digest="",
        reproducible=True, changed_files=(), provenance="", key_id="",
        attributes={"stored_at": str(stored_at)},
    )  # fmt: skip


async def test_availability_is_the_whole_stored_copy(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"abc")
    stored = store_file(source, tmp_path / "store")
    kind = FileStage()
    assert await kind.artifact_available(stored_artifact(stored.digest, 3, stored.path))
    assert not await kind.artifact_available(stored_artifact(stored.digest, 4, stored.path))
    stored.path.unlink()
    assert not await kind.artifact_available(stored_artifact(stored.digest, 3, stored.path))
