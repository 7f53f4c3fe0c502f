"""Queries on artifacts, the tags that name them and the cache hits that
reused them.

An artifact is one row per digest and is never rebuilt: recording a digest
the store already knows updates that row (where it was pushed, the manifest
digest, more tags) and signs its provenance again. A tag (``name``, ``tag``)
names one digest; moving it to another digest is refused unless the caller
allows it, and then nothing at all is written.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from conveyor.daemon.artifacts.model import Artifact, ArtifactOutput, StageTiming
from conveyor.daemon.artifacts.provenance import BuildFacts
from conveyor.daemon.store.database import Database

#: Signs provenance: the build facts in, ``(DSSE envelope JSON, key id)`` out.
Seal = Callable[[BuildFacts], tuple[str, str]]


class TagConflict(Exception):
    """A tag already names another digest, and moving it was not allowed.
    The message names the tag, both digests and how to allow it."""

    def __init__(self, name: str, tag: str, current: str, wanted: str, run_number: int) -> None:
        self.name, self.tag, self.current, self.wanted = name, tag, current, wanted
        owner = f" (recorded by run #{run_number})" if run_number else ""
        super().__init__(
            f"tag {name}:{tag} already names {current}{owner}; refusing to move it to"
            f" {wanted} (artifacts are immutable: set overwrite_tags: true on the stage"
            " to allow moving tags)"
        )


@dataclass(frozen=True)
class ArtifactDraft:
    """What the daemon knows of one artifact a stage attempt produced."""

    output: ArtifactOutput
    version: str
    stages: tuple[StageTiming, ...]
    facts: BuildFacts
    trace_id: str = ""
    span_id: str = ""
    changed_files: tuple[str, ...] = ()
    #: The stage's cache key ("" when the stage has no ``inputs:``).
    cache_key: str = ""
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Recorded:
    artifact: Artifact
    #: True for a new digest, False for an update of a known one.
    created: bool


@dataclass(frozen=True)
class CacheHit:
    """A re-run that reused an artifact instead of building it."""

    run_id: str
    run_number: int
    stage: str
    digest: str
    original_run_id: str
    created_at: float


@dataclass(frozen=True)
class ArtifactFilter:
    pipeline: str = ""
    commit_prefix: str = ""
    version: str = ""
    tag: str = ""
    name: str = ""


def _loads(text: str, default: Any) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return default


def _timings(text: str) -> tuple[StageTiming, ...]:
    items = _loads(text, [])
    return tuple(
        StageTiming(str(item.get("name", "")), item.get("started_at"), item.get("finished_at"))
        for item in items
        if isinstance(item, dict)
    )


def _timings_json(stages: Sequence[StageTiming]) -> str:
    return json.dumps(
        [{"name": s.name, "started_at": s.started_at, "finished_at": s.finished_at} for s in stages]
    )


def _tags_of(conn: sqlite3.Connection, digests: Sequence[str]) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {digest: [] for digest in digests}
    if not digests:
        return tags
    marks = ",".join("?" * len(digests))
    rows = conn.execute(
        f"SELECT digest, tag FROM artifact_tags WHERE digest IN ({marks}) ORDER BY created_at, tag",
        list(digests),
    )
    for row in rows:
        if row["tag"] not in tags[row["digest"]]:
            tags[row["digest"]].append(row["tag"])
    return tags


def _artifact(row: sqlite3.Row, tags: Iterable[str]) -> Artifact:
    attributes = _loads(row["attributes_json"], {})
    return Artifact(
        digest=row["digest"],
        kind=row["kind"],
        name=row["name"],
        version=row["version"],
        tags=tuple(tags),
        size=row["size"],
        media_type=row["media_type"],
        repository=row["repository"],
        ref=row["ref"],
        commit=row["commit_sha"],
        pipeline=row["pipeline"],
        run_id=row["run_id"],
        run_number=row["run_number"],
        stage=row["stage"],
        stages=_timings(row["stages_json"]),
        created_at=row["created_at"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        pushed_to=tuple(_loads(row["pushed_to_json"], [])),
        manifest_digest=row["manifest_digest"],
        reproducible=bool(row["reproducible"]),
        changed_files=tuple(_loads(row["changed_files_json"], [])),
        provenance=row["provenance"],
        key_id=row["key_id"],
        attributes=MappingProxyType({str(k): str(v) for k, v in attributes.items()}),
        cache_key=row["cache_key"],
    )


def _artifacts(conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[Artifact]:
    tags = _tags_of(conn, [row["digest"] for row in rows])
    return [_artifact(row, tags[row["digest"]]) for row in rows]


def _get(conn: sqlite3.Connection, digest: str) -> Artifact | None:
    row = conn.execute("SELECT * FROM artifacts WHERE digest = ?", (digest,)).fetchone()
    return _artifacts(conn, [row])[0] if row is not None else None


def _check_tags(conn: sqlite3.Connection, drafts: Sequence[ArtifactDraft]) -> None:
    """Raise :class:`TagConflict` for the first tag that would move."""
    wanted: dict[tuple[str, str], str] = {}
    for draft in drafts:
        out = draft.output
        for tag in out.tags:
            key = (out.name, tag)
            earlier = wanted.setdefault(key, out.digest)
            if earlier != out.digest:
                raise TagConflict(out.name, tag, earlier, out.digest, 0)
            row = conn.execute(
                "SELECT artifact_tags.digest, artifacts.run_number FROM artifact_tags"
                " JOIN artifacts ON artifacts.digest = artifact_tags.digest"
                " WHERE artifact_tags.name = ? AND artifact_tags.tag = ?",
                key,
            ).fetchone()
            if row is not None and row["digest"] != out.digest:
                raise TagConflict(out.name, tag, row["digest"], out.digest, row["run_number"])


def _insert(conn: sqlite3.Connection, draft: ArtifactDraft, seal: Seal) -> None:
    out, facts = draft.output, draft.facts
    pushed = [out.pushed_to] if out.pushed_to else []
    subjects = tuple((name, out.manifest_digest) for name in pushed if out.manifest_digest)
    facts = replace(facts, other_subjects=subjects)
    envelope, key_id = seal(facts)
    conn.execute(
        "INSERT INTO artifacts (digest, kind, name, version, size, media_type, repository, ref,"
        " commit_sha, pipeline, run_id, run_number, stage, stages_json, created_at, updated_at,"
        " trace_id, span_id, pushed_to_json, manifest_digest, reproducible, changed_files_json,"
        " facts_json, provenance, key_id, attributes_json, cache_key)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            out.digest,
            out.kind,
            out.name,
            draft.version,
            out.size,
            out.media_type,
            facts.repository,
            facts.ref,
            facts.commit,
            facts.pipeline,
            facts.run_id,
            facts.run_number,
            facts.stage,
            _timings_json(draft.stages),
            draft.created_at,
            draft.created_at,
            draft.trace_id,
            draft.span_id,
            json.dumps(pushed),
            out.manifest_digest,
            int(not draft.changed_files),
            json.dumps(list(draft.changed_files)),
            facts.to_json(),
            envelope,
            key_id,
            json.dumps(dict(out.attributes)),
            draft.cache_key,
        ),
    )


def _update(conn: sqlite3.Connection, row: sqlite3.Row, draft: ArtifactDraft, seal: Seal) -> None:
    """Merge what a later stage says about a known digest into its row."""
    out = draft.output
    pushed = list(_loads(row["pushed_to_json"], []))
    if out.pushed_to and out.pushed_to not in pushed:
        pushed.append(out.pushed_to)
    manifest = out.manifest_digest or row["manifest_digest"]
    attributes = {**_loads(row["attributes_json"], {}), **out.attributes}
    cache_key = row["cache_key"]
    if (
        draft.cache_key
        and row["pipeline"] == draft.facts.pipeline
        and row["stage"] == draft.facts.stage
    ):
        cache_key = draft.cache_key  # a reproducible rebuild under a newer key
    envelope, key_id = row["provenance"], row["key_id"]
    facts = BuildFacts.from_json(row["facts_json"])
    subjects = tuple((name, manifest) for name in pushed if manifest)
    if subjects != tuple(facts.other_subjects):
        envelope, key_id = seal(replace(facts, other_subjects=subjects))
        conn.execute(
            "UPDATE artifacts SET facts_json = ? WHERE digest = ?",
            (replace(facts, other_subjects=subjects).to_json(), out.digest),
        )
    conn.execute(
        "UPDATE artifacts SET pushed_to_json = ?, manifest_digest = ?, attributes_json = ?,"
        " size = CASE WHEN size = 0 THEN ? ELSE size END,"
        " media_type = CASE WHEN media_type = '' THEN ? ELSE media_type END,"
        " cache_key = ?, provenance = ?, key_id = ?, updated_at = ? WHERE digest = ?",
        (
            json.dumps(pushed),
            manifest,
            json.dumps(attributes),
            out.size,
            out.media_type,
            cache_key,
            envelope,
            key_id,
            draft.created_at,
            out.digest,
        ),
    )


class ArtifactStore:
    """Artifacts, tags and cache hits on top of :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self, drafts: Sequence[ArtifactDraft], seal: Seal, *, overwrite_tags: bool = False
    ) -> list[Recorded]:
        """Record what one stage attempt produced, all or nothing.

        A new digest is inserted with provenance signed by ``seal``; a known
        one is updated (see the module docstring). Each output's tags then
        name its digest.

        Raises :class:`TagConflict`, having written nothing, when a tag
        names another digest and ``overwrite_tags`` is false.
        """

        def txn(conn: sqlite3.Connection) -> list[Recorded]:
            if not overwrite_tags:
                _check_tags(conn, drafts)
            created: dict[str, bool] = {}
            for draft in drafts:
                digest = draft.output.digest
                row = conn.execute("SELECT * FROM artifacts WHERE digest = ?", (digest,)).fetchone()
                if row is None:
                    _insert(conn, draft, seal)
                    created.setdefault(digest, True)
                else:
                    _update(conn, row, draft, seal)
                    created.setdefault(digest, False)
                conn.executemany(
                    "INSERT INTO artifact_tags (name, tag, digest, run_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, tag) DO UPDATE SET"
                    " digest = excluded.digest, run_id = excluded.run_id,"
                    " created_at = excluded.created_at WHERE digest != excluded.digest",
                    [
                        (draft.output.name, tag, digest, draft.facts.run_id, draft.created_at)
                        for tag in dict.fromkeys(draft.output.tags)
                    ],
                )
            recorded = []
            for digest, new in created.items():
                artifact = _get(conn, digest)
                assert artifact is not None
                recorded.append(Recorded(artifact, new))
            return recorded

        return await self.db.write(txn)

    async def get(self, digest: str) -> Artifact | None:
        return await self.db.read(lambda conn: _get(conn, digest))

    async def with_prefix(self, prefix: str, limit: int = 2) -> list[Artifact]:
        """Artifacts whose digest starts with ``prefix`` (``sha256:1a2b...``)."""

        def query(conn: sqlite3.Connection) -> list[Artifact]:
            rows = conn.execute(
                "SELECT * FROM artifacts WHERE digest >= ? AND digest < ? ORDER BY digest LIMIT ?",
                (prefix, prefix + "g", limit),
            ).fetchall()
            return _artifacts(conn, rows)

        return await self.db.read(query)

    async def tagged(self, name: str, tag: str) -> Artifact | None:
        """The artifact the tag ``name:tag`` names, if any."""

        def query(conn: sqlite3.Connection) -> Artifact | None:
            row = conn.execute(
                "SELECT digest FROM artifact_tags WHERE name = ? AND tag = ?", (name, tag)
            ).fetchone()
            return _get(conn, row["digest"]) if row is not None else None

        return await self.db.read(query)

    async def tag_digest(self, name: str, tag: str) -> str | None:
        """The digest the tag ``name:tag`` names, if any."""

        def query(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT digest FROM artifact_tags WHERE name = ? AND tag = ?", (name, tag)
            ).fetchone()
            return str(row["digest"]) if row is not None else None

        return await self.db.read(query)

    async def names_of(self, digest: str) -> set[str]:
        """Every name the digest goes by: its own, the names of its tags and
        where it was pushed."""

        def query(conn: sqlite3.Connection) -> set[str]:
            artifact = _get(conn, digest)
            if artifact is None:
                return set()
            rows = conn.execute("SELECT name FROM artifact_tags WHERE digest = ?", (digest,))
            return {artifact.name, *artifact.pushed_to, *(row["name"] for row in rows)}

        return await self.db.read(query)

    async def list_artifacts(
        self, filt: ArtifactFilter, *, limit: int, before_seq: int = 0
    ) -> list[tuple[int, Artifact]]:
        """Newest first, each with its position (for ``before_seq`` of the
        next page)."""

        def query(conn: sqlite3.Connection) -> list[tuple[int, Artifact]]:
            clauses: list[str] = []
            params: list[Any] = []
            if filt.pipeline:
                clauses.append("pipeline = ?")
                params.append(filt.pipeline)
            if filt.commit_prefix:
                clauses.append("commit_sha >= ? AND commit_sha < ?")
                params += [filt.commit_prefix, filt.commit_prefix + "g"]
            if filt.version:
                clauses.append("version = ?")
                params.append(filt.version)
            if filt.name:
                clauses.append("name = ?")
                params.append(filt.name)
            if filt.tag:
                clauses.append("digest IN (SELECT digest FROM artifact_tags WHERE tag = ?)")
                params.append(filt.tag)
            if before_seq:
                clauses.append("seq < ?")
                params.append(before_seq)
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            rows = conn.execute(
                f"SELECT * FROM artifacts {where} ORDER BY seq DESC LIMIT ?", [*params, limit]
            ).fetchall()
            return list(zip((row["seq"] for row in rows), _artifacts(conn, rows), strict=True))

        return await self.db.read(query)

    async def cached(self, pipeline: str, stage: str, cache_key: str) -> list[Artifact]:
        """The artifacts of the latest run whose ``stage`` recorded
        ``cache_key`` (empty when none did)."""

        def query(conn: sqlite3.Connection) -> list[Artifact]:
            latest = conn.execute(
                "SELECT run_id FROM artifacts WHERE pipeline = ? AND stage = ? AND cache_key = ?"
                " ORDER BY seq DESC LIMIT 1",
                (pipeline, stage, cache_key),
            ).fetchone()
            if latest is None:
                return []
            rows = conn.execute(
                "SELECT * FROM artifacts WHERE pipeline = ? AND stage = ? AND cache_key = ?"
                " AND run_id = ? ORDER BY seq",
                (pipeline, stage, cache_key, latest["run_id"]),
            ).fetchall()
            return _artifacts(conn, rows)

        return await self.db.read(query)

    async def record_cache_hits(
        self, run_id: str, stage: str, cache_key: str, artifacts: Sequence[Artifact]
    ) -> None:
        """Record that ``stage`` of run ``run_id`` reused ``artifacts``."""
        now = time.time()

        def txn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO cache_hits (run_id, stage, digest, original_run_id,"
                " cache_key, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, stage, a.digest, a.run_id, cache_key, now) for a in artifacts],
            )

        await self.db.write(txn)

    async def cache_hits(self, digest: str, limit: int = 100) -> list[CacheHit]:
        """The latest re-runs that reused the artifact, newest first."""

        def query(conn: sqlite3.Connection) -> list[CacheHit]:
            rows = conn.execute(
                "SELECT cache_hits.*, runs.number FROM cache_hits"
                " JOIN runs ON runs.id = cache_hits.run_id"
                " WHERE cache_hits.digest = ? ORDER BY cache_hits.created_at DESC LIMIT ?",
                (digest, limit),
            )
            return [
                CacheHit(
                    run_id=row["run_id"],
                    run_number=row["number"],
                    stage=row["stage"],
                    digest=row["digest"],
                    original_run_id=row["original_run_id"],
                    created_at=row["created_at"],
                )
                for row in rows
            ]

        return await self.db.read(query)

    async def of_run(self, run_id: str) -> list[Artifact]:
        """What run ``run_id`` recorded or reused, oldest first."""

        def query(conn: sqlite3.Connection) -> list[Artifact]:
            rows = conn.execute(
                "SELECT * FROM artifacts WHERE run_id = ? OR digest IN"
                " (SELECT digest FROM cache_hits WHERE run_id = ?) ORDER BY seq",
                (run_id, run_id),
            ).fetchall()
            return _artifacts(conn, rows)

        return await self.db.read(query)
