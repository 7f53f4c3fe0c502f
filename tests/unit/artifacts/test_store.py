"""The artifact store and catalog in-process, on a real SQLite database:
one row per digest, immutable tags, cache lookups, listings and references."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conveyor.client.provenance import load_public_key, verify_envelope
from conveyor.daemon.artifacts import signing
from conveyor.daemon.artifacts.catalog import ArtifactCatalog
from conveyor.daemon.artifacts.model import FILE, OCI_IMAGE, ArtifactOutput, StageTiming
from conveyor.daemon.artifacts.provenance import BuildFacts, statement
from conveyor.daemon.errors import InvalidArgument, NotFound
from conveyor.daemon.records import RunRecord, RunStatus, TriggerKind
from conveyor.daemon.store import ArtifactFilter, ArtifactStore, Database, RunStore
from conveyor.daemon.store.artifacts import ArtifactDraft, TagConflict
from conveyor.daemon.store.schema import MIGRATIONS, migrate


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "conveyor.db")
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def key(tmp_path: Path) -> signing.SigningKey:
    return signing.load_or_create(tmp_path)


def seal_with(key: signing.SigningKey):  # type: ignore[no-untyped-def]
    def seal(facts: BuildFacts) -> tuple[str, str]:
        return key.sign_statement(statement(facts)), key.key_id

    return seal


_ids = iter(range(1, 1_000_000))


async def stored_run(db: Database, pipeline: str = "svc", commit: str = "a" * 40) -> RunRecord:
    run = RunRecord(
        id=f"{next(_ids):012x}00000000",
        number=0,
        pipeline=pipeline,
        repository="/srv/svc",
        ref="main",
        commit=commit,
        pipeline_path="conveyor.yaml",
        trigger=TriggerKind.MANUAL,
        status=RunStatus.RUNNING,
        created_at=time.time(),
        spec_json="{}",
        concurrency_group="",
    )
    stored, _ = await RunStore(db).create_run(run)
    return stored


def draft(
    run: RunRecord, out: ArtifactOutput, *, cache_key: str = "", stage: str = "build"
) -> ArtifactDraft:
    return ArtifactDraft(
        output=out,
        version=f"1.0.0-rc.{run.number}",
        stages=(StageTiming(stage, 1.0, 2.0),),
        facts=BuildFacts(
            subject_name=out.name,
            digest=out.digest,
            repository=run.repository,
            ref=run.ref,
            commit=run.commit,
            pipeline=run.pipeline,
            run_id=run.id,
            run_number=run.number,
            stage=stage,
            stage_kind="file",
            parameters={"with": {}},
            started_at=1.0,
            finished_at=2.0,
            builder_id="conveyor://test",
            builder_version="0",
        ),
        cache_key=cache_key,
    )


def file_output(n: int, name: str = "app.tar", tags: tuple[str, ...] = ()) -> ArtifactOutput:
    return ArtifactOutput(kind=FILE, name=name, digest=digest(n), size=10, tags=tags)


async def test_a_new_digest_is_recorded_with_tags_and_signed_provenance(
    db: Database, key: signing.SigningKey
) -> None:
    store = ArtifactStore(db)
    run = await stored_run(db)
    (recorded,) = await store.record([draft(run, file_output(1, tags=("1.0.0",)))], seal_with(key))
    assert recorded.created
    artifact = recorded.artifact
    assert (artifact.digest, artifact.tags, artifact.run_id, artifact.version) == (
        digest(1),
        ("1.0.0",),
        run.id,
        "1.0.0-rc.1",
    )
    assert artifact.stages == (StageTiming("build", 1.0, 2.0),)
    assert artifact.reproducible and artifact.key_id == key.key_id
    verified = verify_envelope(
        artifact.provenance, load_public_key(key.public_pem()), subject_digest=digest(1)
    )
    assert verified.statement["subject"][0]["name"] == "app.tar"
    assert await store.get(digest(1)) == artifact
    assert await store.tag_digest("app.tar", "1.0.0") == digest(1)


async def test_a_known_digest_is_updated_and_its_provenance_names_the_push(
    db: Database, key: signing.SigningKey
) -> None:
    store = ArtifactStore(db)
    run = await stored_run(db)
    image = ArtifactOutput(kind=OCI_IMAGE, name="demo/app", digest=digest(2), tags=("1.0.0",))
    await store.record([draft(run, image)], seal_with(key))
    pushed = replace(
        image,
        name="127.0.0.1:5000/demo/app",
        tags=("1.0.0", "sha-abc"),
        pushed_to="127.0.0.1:5000/demo/app",
        manifest_digest=digest(3),
        attributes={"registry": "127.0.0.1:5000"},
    )
    (recorded,) = await store.record([draft(run, pushed, stage="push")], seal_with(key))
    assert not recorded.created
    artifact = recorded.artifact
    # the build's facts stay: the artifact is the one the build stage made
    assert (artifact.name, artifact.stage) == ("demo/app", "build")
    assert artifact.pushed_to == ("127.0.0.1:5000/demo/app",)
    assert artifact.manifest_digest == digest(3)
    assert artifact.tags == ("1.0.0", "sha-abc")
    assert artifact.attributes["registry"] == "127.0.0.1:5000"
    verified = verify_envelope(
        artifact.provenance, load_public_key(key.public_pem()), subject_digest=digest(3)
    )
    assert [s["name"] for s in verified.statement["subject"]] == [
        "demo/app",
        "127.0.0.1:5000/demo/app",
    ]
    catalog = ArtifactCatalog(store, key)
    assert (await catalog.find(f"127.0.0.1:5000/demo/app@{digest(2)}")).digest == digest(2)
    assert (await catalog.find("127.0.0.1:5000/demo/app:sha-abc")).digest == digest(2)


async def test_a_tag_naming_another_digest_is_refused_and_nothing_is_written(
    db: Database, key: signing.SigningKey
) -> None:
    store = ArtifactStore(db)
    first = await stored_run(db)
    second = await stored_run(db)
    await store.record([draft(first, file_output(4, tags=("2.0.0",)))], seal_with(key))
    moved = [
        draft(second, file_output(5, name="other.tar", tags=("2.0.0",))),
        draft(second, file_output(6, tags=("2.0.0", "latest"))),
    ]
    with pytest.raises(TagConflict) as info:
        await store.record(moved, seal_with(key))
    assert str(info.value).startswith(
        f"tag app.tar:2.0.0 already names {digest(4)} (recorded by run #1); refusing to move it"
        f" to {digest(6)}"
    )
    assert "overwrite_tags: true" in str(info.value)
    # all or nothing: not even the output without a conflict was recorded
    assert await store.get(digest(5)) is None
    assert await store.get(digest(6)) is None
    assert await store.tag_digest("app.tar", "latest") is None
    await store.record(moved, seal_with(key), overwrite_tags=True)
    assert await store.tag_digest("app.tar", "2.0.0") == digest(6)
    assert await store.tag_digest("other.tar", "2.0.0") == digest(5)
    assert (await store.get(digest(4))).tags == ()  # type: ignore[union-attr]


async def test_the_cache_answers_the_latest_run_of_the_same_pipeline_and_stage(
    db: Database, key: signing.SigningKey
) -> None:
    store = ArtifactStore(db)
    run = await stored_run(db)
    later = await stored_run(db)
    await store.record([draft(run, file_output(7), cache_key="sha256:k")], seal_with(key))
    await store.record(
        [
            draft(later, file_output(8), cache_key="sha256:k"),
            draft(later, file_output(9), cache_key="sha256:k"),
        ],
        seal_with(key),
    )
    cached = await store.cached("svc", "build", "sha256:k")
    assert [a.digest for a in cached] == [digest(8), digest(9)]
    assert await store.cached("svc", "test", "sha256:k") == []
    assert await store.cached("other", "build", "sha256:k") == []
    third = await stored_run(db)
    await store.record_cache_hits(third.id, "build", "sha256:k", cached)
    hits = await store.cache_hits(digest(8))
    assert [(h.run_id, h.run_number, h.original_run_id) for h in hits] == [
        (third.id, third.number, later.id)
    ]
    assert [a.digest for a in await store.of_run(third.id)] == [digest(8), digest(9)]


async def test_listings_filter_and_page_newest_first(db: Database, key: signing.SigningKey) -> None:
    store = ArtifactStore(db)
    catalog = ArtifactCatalog(store, key)
    runs = [await stored_run(db, "web", commit=f"{i:x}" * 40) for i in range(1, 4)]
    for i, run in enumerate(runs, start=10):
        await store.record(
            [draft(run, file_output(i, name=f"web-{i}.tar", tags=(f"v{i}",)))], seal_with(key)
        )
    other = await stored_run(db, "api")
    await store.record([draft(other, file_output(20, name="api.tar"))], seal_with(key))

    page, token = await catalog.list_artifacts(ArtifactFilter(pipeline="web"), 2, "")
    assert [a.digest for _, a in page] == [digest(12), digest(11)]
    page, token = await catalog.list_artifacts(ArtifactFilter(pipeline="web"), 2, token)
    assert ([a.digest for _, a in page], token) == ([digest(10)], "")
    only = ArtifactFilter(commit_prefix="2222", tag="v11", name="web-11.tar", version="1.0.0-rc.2")
    assert [a.digest for _, a in (await catalog.list_artifacts(only, 0, ""))[0]] == [digest(11)]
    with pytest.raises(InvalidArgument, match="commit must be 4 to 40"):
        await catalog.list_artifacts(ArtifactFilter(commit_prefix="xyz"), 0, "")
    with pytest.raises(InvalidArgument, match="page_token"):
        await catalog.list_artifacts(ArtifactFilter(), 0, "abc")


async def test_references_by_digest_prefix_tag_and_name(
    db: Database, key: signing.SigningKey
) -> None:
    store = ArtifactStore(db)
    catalog = ArtifactCatalog(store, key)
    run = await stored_run(db)
    first = "sha256:" + "ab" * 32
    second = "sha256:" + "ab" * 8 + "cd" * 24
    for d in (first, second):
        out = ArtifactOutput(kind=FILE, name="lib.whl", digest=d, tags=(d[-4:],))
        await store.record([draft(run, out)], seal_with(key))
    assert (await catalog.find(first)).digest == first
    assert (await catalog.find("sha256:" + "ab" * 17)).digest == first
    assert (await catalog.find(f"lib.whl@{second}")).digest == second
    assert (await catalog.find("lib.whl:cdcd")).digest == second
    with pytest.raises(InvalidArgument, match="more than one artifact"):
        await catalog.find("sha256:abababab")
    with pytest.raises(NotFound, match=re.escape("no artifact is tagged lib.whl:nope")):
        await catalog.find("lib.whl:nope")
    with pytest.raises(NotFound, match=re.escape("no artifact other.whl@")):
        await catalog.find(f"other.whl@{first}")
    with pytest.raises(NotFound, match="no artifact digest starts with"):
        await catalog.find("sha256:00000000")
    for bad in ("", "sha256:xyz", "lib.whl@sha256:ab", "127.0.0.1:5000/app", "justaname"):
        with pytest.raises(InvalidArgument):
            await catalog.find(bad)
    assert catalog.signing_key() == (key.key_id, key.public_pem())


def test_a_database_of_the_previous_schema_migrates_with_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:5], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    conn.execute(
        "INSERT INTO runs (id, number, pipeline, repository, ref, commit_sha, pipeline_path,"
        " trigger, status, created_at, spec_json, concurrency_group) VALUES"
        " ('r1', 1, 'p', '/r', 'main', 'c', 'conveyor.yaml', 'manual', 'succeeded', 1, '{}', '')"
    )
    migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("SELECT version FROM runs WHERE id = 'r1'").fetchone()[0] == ""
    assert conn.execute("SELECT count(*) FROM artifacts").fetchone()[0] == 0
    conn.close()
