"""Deployments and their events: the delivery audit trail.

A deployment is one row, never deleted (history is not capped). Every
status change is written together with an event naming the old status, the
new one and the reason, in one transaction; progress lines of the rollout
are events without a status change. A transition names the statuses it may
leave (``expect``): a transition that lost a race (an approval that
expired meanwhile) changes nothing and raises :class:`StaleTransition`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

from conveyor.daemon.delivery.records import (
    Commit,
    DeploymentEvent,
    DeploymentKind,
    DeploymentRecord,
    DeploymentStatus,
)
from conveyor.daemon.store.database import Database

#: Longest event message stored; longer ones are cut.
MAX_MESSAGE: Final = 2000

#: Columns a transition or an update may set, beside the status.
_COLUMNS: Final = {
    "reason",
    "started_at",
    "finished_at",
    "healthy_at",
    "restored_by",
    "trace_id",
    "span_id",
    "decided_by",
    "decided_at",
    "decision_comment",
    "environment_json",
    "stopped_at",
    "stopped_by",
}


class StaleTransition(Exception):
    """The deployment was no longer in a status the transition may leave;
    nothing was written. ``status`` is the status it has."""

    def __init__(self, deployment_id: str, status: DeploymentStatus) -> None:
        super().__init__(f"deployment {deployment_id} is {status.value}")
        self.deployment_id = deployment_id
        self.status = status


@dataclass(frozen=True)
class DeploymentFilter:
    environment: str = ""
    digest: str = ""


def _commits(text: str) -> list[Commit]:
    try:
        items = json.loads(text)
    except ValueError:
        return []
    return [Commit(str(i[0]), str(i[1])) for i in items if isinstance(i, list) and len(i) == 2]


def _commits_json(commits: Sequence[Commit]) -> str:
    return json.dumps([[c.id, c.subject] for c in commits])


def _record(row: sqlite3.Row) -> DeploymentRecord:
    return DeploymentRecord(
        id=row["id"],
        environment=row["environment"],
        pipeline=row["pipeline"],
        kind=DeploymentKind(row["kind"]),
        digest=row["digest"],
        artifact_name=row["artifact_name"],
        artifact_kind=row["artifact_kind"],
        version=row["version"],
        commit=row["commit_sha"],
        repository=row["repository"],
        run_id=row["run_id"],
        run_number=row["run_number"],
        deployer=row["deployer"],
        target=row["target"],
        replicas=row["replicas"],
        status=DeploymentStatus(row["status"]),
        reason=row["reason"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        healthy_at=row["healthy_at"],
        commit_time=row["commit_time"],
        source_environment=row["source_environment"],
        previous_id=row["previous_id"],
        previous_digest=row["previous_digest"],
        restores_id=row["restores_id"],
        cause_id=row["cause_id"],
        restored_by=row["restored_by"],
        commits=_commits(row["commits_json"]),
        reverted=_commits(row["reverted_json"]),
        commits_total=row["commits_total"],
        config_hash=row["config_hash"],
        config_changed=bool(row["config_changed"]),
        environment_json=row["environment_json"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        approval_expires_at=row["approval_expires_at"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        decision_comment=row["decision_comment"],
        stopped_at=row["stopped_at"],
        stopped_by=row["stopped_by"],
    )


def _event(row: sqlite3.Row) -> DeploymentEvent:
    return DeploymentEvent(
        seq=row["seq"],
        time=row["time"],
        status=DeploymentStatus(row["status"]),
        message=row["message"],
        from_status=DeploymentStatus(row["from_status"]) if row["from_status"] else None,
    )


def _add_event(
    conn: sqlite3.Connection,
    deployment_id: str,
    status: DeploymentStatus,
    message: str,
    from_status: DeploymentStatus | None = None,
    when: float | None = None,
) -> None:
    (seq,) = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM deployment_events WHERE deployment_id = ?",
        (deployment_id,),
    ).fetchone()
    conn.execute(
        "INSERT INTO deployment_events (deployment_id, seq, time, status, from_status, message)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            deployment_id,
            seq,
            time.time() if when is None else when,
            status.value,
            from_status.value if from_status is not None else "",
            message[:MAX_MESSAGE],
        ),
    )


def _get(conn: sqlite3.Connection, deployment_id: str, *, events: bool) -> DeploymentRecord | None:
    row = conn.execute("SELECT * FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
    if row is None:
        return None
    record = _record(row)
    if events:
        rows = conn.execute(
            "SELECT * FROM deployment_events WHERE deployment_id = ? ORDER BY seq",
            (deployment_id,),
        )
        record.events = [_event(r) for r in rows]
    return record


def _set_columns(conn: sqlite3.Connection, deployment_id: str, columns: dict[str, Any]) -> None:
    unknown = set(columns) - _COLUMNS
    if unknown:
        raise ValueError(f"not a deployment column that changes: {', '.join(sorted(unknown))}")
    if not columns:
        return
    assignments = ", ".join(f"{name} = ?" for name in columns)
    conn.execute(
        f"UPDATE deployments SET {assignments} WHERE id = ?", [*columns.values(), deployment_id]
    )


class DeploymentStore:
    """Deployments and their events on top of :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, record: DeploymentRecord, message: str) -> DeploymentRecord:
        """Store a new deployment with its first event (``message``, the
        reason it was created). Returns it as stored, with that event."""

        def txn(conn: sqlite3.Connection) -> DeploymentRecord:
            r = record
            conn.execute(
                "INSERT INTO deployments (id, environment, pipeline, kind, digest, artifact_name,"
                " artifact_kind, version, commit_sha, commit_time, repository, run_id, run_number,"
                " deployer, target, replicas, status, reason, created_at, started_at, finished_at,"
                " healthy_at, source_environment, previous_id, previous_digest, restores_id,"
                " cause_id, restored_by, commits_json, reverted_json, commits_total, config_hash,"
                " config_changed, environment_json, trace_id, span_id, approval_expires_at,"
                " decided_by, decided_at, decision_comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?, ?)",
                (
                    r.id,
                    r.environment,
                    r.pipeline,
                    r.kind.value,
                    r.digest,
                    r.artifact_name,
                    r.artifact_kind,
                    r.version,
                    r.commit,
                    r.commit_time,
                    r.repository,
                    r.run_id,
                    r.run_number,
                    r.deployer,
                    r.target,
                    r.replicas,
                    r.status.value,
                    r.reason,
                    r.created_at,
                    r.started_at,
                    r.finished_at,
                    r.healthy_at,
                    r.source_environment,
                    r.previous_id,
                    r.previous_digest,
                    r.restores_id,
                    r.cause_id,
                    r.restored_by,
                    _commits_json(r.commits),
                    _commits_json(r.reverted),
                    r.commits_total,
                    r.config_hash,
                    int(r.config_changed),
                    r.environment_json,
                    r.trace_id,
                    r.span_id,
                    r.approval_expires_at,
                    r.decided_by,
                    r.decided_at,
                    r.decision_comment,
                ),
            )
            _add_event(conn, r.id, r.status, message, when=r.created_at)
            stored = _get(conn, r.id, events=True)
            assert stored is not None
            return stored

        return await self.db.write(txn)

    async def transition(
        self,
        deployment_id: str,
        status: DeploymentStatus,
        reason: str,
        *,
        expect: Collection[DeploymentStatus],
        **columns: Any,
    ) -> DeploymentRecord:
        """Move a deployment from one of the ``expect`` statuses to
        ``status``, recording ``reason`` (as the deployment's reason and as
        an event naming both statuses) and ``columns``, in one transaction.

        Raises :class:`StaleTransition`, having written nothing, when the
        deployment is in another status; KeyError when there is no such
        deployment.
        """

        def txn(conn: sqlite3.Connection) -> DeploymentRecord:
            row = conn.execute(
                "SELECT status FROM deployments WHERE id = ?", (deployment_id,)
            ).fetchone()
            if row is None:
                raise KeyError(deployment_id)
            current = DeploymentStatus(row["status"])
            if current not in expect:
                raise StaleTransition(deployment_id, current)
            _set_columns(conn, deployment_id, {"reason": reason, **columns})
            conn.execute(
                "UPDATE deployments SET status = ? WHERE id = ?", (status.value, deployment_id)
            )
            _add_event(conn, deployment_id, status, reason, current)
            record = _get(conn, deployment_id, events=False)
            assert record is not None
            return record

        return await self.db.write(txn, hold=True)

    async def log(self, deployment_id: str, message: str) -> None:
        """Add a line to the deployment's log (an event without a transition)."""

        def txn(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT status FROM deployments WHERE id = ?", (deployment_id,)
            ).fetchone()
            if row is not None:
                _add_event(conn, deployment_id, DeploymentStatus(row["status"]), message)

        await self.db.write(txn)

    async def update(self, deployment_id: str, **columns: Any) -> None:
        """Set columns (see :data:`_COLUMNS`) without a transition."""
        await self.db.write(lambda conn: _set_columns(conn, deployment_id, columns))

    async def get(self, deployment_id: str, *, events: bool = True) -> DeploymentRecord | None:
        return await self.db.read(lambda conn: _get(conn, deployment_id, events=events))

    async def events_after(self, deployment_id: str, seq: int) -> list[DeploymentEvent]:
        """The deployment's events after ``seq``, oldest first."""

        def query(conn: sqlite3.Connection) -> list[DeploymentEvent]:
            rows = conn.execute(
                "SELECT * FROM deployment_events WHERE deployment_id = ? AND seq > ? ORDER BY seq",
                (deployment_id, seq),
            )
            return [_event(row) for row in rows]

        return await self.db.read(query)

    async def list_deployments(
        self, filt: DeploymentFilter, *, limit: int, before_id: str = ""
    ) -> list[DeploymentRecord]:
        """Newest first (without events)."""

        def query(conn: sqlite3.Connection) -> list[DeploymentRecord]:
            clauses: list[str] = []
            params: list[Any] = []
            if filt.environment:
                clauses.append("environment = ?")
                params.append(filt.environment)
            if filt.digest:
                clauses.append("digest = ?")
                params.append(filt.digest)
            if before_id:
                clauses.append("id < ?")
                params.append(before_id)
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            rows = conn.execute(
                f"SELECT * FROM deployments {where} ORDER BY id DESC LIMIT ?", [*params, limit]
            )
            return [_record(row) for row in rows]

        return await self.db.read(query)

    async def current(self, environment: str) -> DeploymentRecord | None:
        """The deployment the environment runs: its latest healthy one;
        None when there is none or it was stopped (the environment runs
        nothing until its next deployment)."""
        latest = await self._one(
            "SELECT * FROM deployments WHERE environment = ? AND status = ? ORDER BY id DESC"
            " LIMIT 1",
            (environment, DeploymentStatus.HEALTHY.value),
        )
        return latest if latest is not None and latest.stopped_at is None else None

    async def healthy_before(self, environment: str, before_id: str) -> DeploymentRecord | None:
        """The latest healthy deployment of ``environment`` older than ``before_id``."""
        return await self._one(
            "SELECT * FROM deployments WHERE environment = ? AND status = ? AND id < ?"
            " ORDER BY id DESC LIMIT 1",
            (environment, DeploymentStatus.HEALTHY.value, before_id),
        )

    async def active(self, environment: str) -> DeploymentRecord | None:
        """The deployment of ``environment`` in progress or waiting for approval."""
        return await self._one(
            "SELECT * FROM deployments WHERE environment = ? AND status IN (?, ?)"
            " ORDER BY id DESC LIMIT 1",
            (
                environment,
                DeploymentStatus.PROGRESSING.value,
                DeploymentStatus.PENDING_APPROVAL.value,
            ),
        )

    async def _one(self, sql: str, params: tuple[Any, ...]) -> DeploymentRecord | None:
        def query(conn: sqlite3.Connection) -> DeploymentRecord | None:
            row = conn.execute(sql, params).fetchone()
            return _record(row) if row is not None else None

        return await self.db.read(query)

    async def with_status(self, status: DeploymentStatus) -> list[DeploymentRecord]:
        """Every deployment in ``status``, oldest first."""

        def query(conn: sqlite3.Connection) -> list[DeploymentRecord]:
            rows = conn.execute(
                "SELECT * FROM deployments WHERE status = ? ORDER BY id", (status.value,)
            )
            return [_record(row) for row in rows]

        return await self.db.read(query)

    async def since_finished(self, environment: str, since: float) -> list[DeploymentRecord]:
        """Every deployment of ``environment`` (without events) from the
        oldest one that finished at or after ``since`` on, oldest first:
        what the DORA figures of a window starting at ``since`` need."""

        def query(conn: sqlite3.Connection) -> list[DeploymentRecord]:
            rows = conn.execute(
                "SELECT * FROM deployments WHERE environment = ? AND id >= (SELECT MIN(id)"
                " FROM deployments WHERE environment = ? AND finished_at >= ?) ORDER BY id",
                (environment, environment, since),
            )
            return [_record(row) for row in rows]

        return await self.db.read(query)

    async def environments(self) -> list[str]:
        """The names of the environments that have deployments."""

        def query(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT DISTINCT environment FROM deployments ORDER BY 1")
            return [row[0] for row in rows]

        return await self.db.read(query)
