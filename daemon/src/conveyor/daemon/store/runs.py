"""Queries on runs, stages and their events."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from conveyor.daemon.records import (
    EventKind,
    EventRecord,
    RunRecord,
    RunStatus,
    StageRecord,
    StageStatus,
    TriggerKind,
)
from conveyor.daemon.reports import StageReport
from conveyor.daemon.store.database import Database

_RUN_COLUMNS = {
    "status",
    "reason",
    "started_at",
    "finished_at",
    "version",
}
_STAGE_COLUMNS = {
    "status",
    "attempt",
    "exit_code",
    "started_at",
    "finished_at",
    "reason",
    "log_size",
    "report_json",
}


@dataclass(frozen=True)
class RunFilter:
    pipeline: str = ""
    status: RunStatus | None = None
    commit_prefix: str = ""


@dataclass(frozen=True)
class Recovery:
    """What start-up found left over by a daemon that did not finish its runs."""

    interrupted: list[str]
    queued: list[str]


@dataclass(frozen=True)
class EventDraft:
    """An event before it has its sequence number."""

    kind: EventKind
    run_status: RunStatus | None = None
    stage: str = ""
    stage_status: StageStatus | None = None
    attempt: int = 0
    exit_code: int | None = None
    message: str = ""


class Update(NamedTuple):
    """An event to append, with the run's and its stage's column changes."""

    event: EventDraft
    run: dict[str, Any] | None = None
    stage: dict[str, Any] | None = None


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        number=row["number"],
        pipeline=row["pipeline"],
        repository=row["repository"],
        ref=row["ref"],
        ref_type=row["ref_type"],
        commit=row["commit_sha"],
        pipeline_path=row["pipeline_path"],
        trigger=TriggerKind(row["trigger"]),
        status=RunStatus(row["status"]),
        reason=row["reason"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        spec_json=row["spec_json"],
        concurrency_group=row["concurrency_group"],
        last_event_seq=row["last_event_seq"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        version=row["version"],
        submitted_by=row["submitted_by"],
    )


def _stage_from_row(row: sqlite3.Row) -> StageRecord:
    return StageRecord(
        run_id=row["run_id"],
        name=row["name"],
        position=row["position"],
        kind=row["kind"],
        needs=json.loads(row["needs_json"]),
        status=StageStatus(row["status"]),
        attempt=row["attempt"],
        exit_code=row["exit_code"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        reason=row["reason"],
        log_size=row["log_size"],
        report=StageReport.from_json(row["report_json"]) if row["report_json"] else None,
    )


def _event_from_row(row: sqlite3.Row) -> EventRecord:
    return EventRecord(
        run_id=row["run_id"],
        seq=row["seq"],
        time=row["time"],
        kind=EventKind(row["kind"]),
        run_status=RunStatus(row["run_status"]) if row["run_status"] else None,
        stage=row["stage"],
        stage_status=StageStatus(row["stage_status"]) if row["stage_status"] else None,
        attempt=row["attempt"],
        exit_code=row["exit_code"],
        message=row["message"],
    )


def _load_stages(conn: sqlite3.Connection, runs: list[RunRecord]) -> None:
    by_id = {run.id: run for run in runs}
    if not by_id:
        return
    marks = ",".join("?" * len(by_id))
    rows = conn.execute(
        f"SELECT * FROM stages WHERE run_id IN ({marks}) ORDER BY run_id, position",
        list(by_id),
    )
    for row in rows:
        by_id[row["run_id"]].stages.append(_stage_from_row(row))


def _insert_event(conn: sqlite3.Connection, run_id: str, draft: EventDraft) -> EventRecord:
    (seq,) = conn.execute(
        "UPDATE runs SET last_event_seq = last_event_seq + 1 WHERE id = ? RETURNING last_event_seq",
        (run_id,),
    ).fetchone()
    event = EventRecord(
        run_id=run_id,
        seq=seq,
        time=time.time(),
        kind=draft.kind,
        run_status=draft.run_status,
        stage=draft.stage,
        stage_status=draft.stage_status,
        attempt=draft.attempt,
        exit_code=draft.exit_code,
        message=draft.message,
    )
    conn.execute(
        "INSERT INTO events (run_id, seq, time, kind, run_status, stage, stage_status,"
        " attempt, exit_code, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            seq,
            event.time,
            event.kind.value,
            event.run_status.value if event.run_status else None,
            event.stage,
            event.stage_status.value if event.stage_status else None,
            event.attempt,
            event.exit_code,
            event.message,
        ),
    )
    return event


def _update(
    conn: sqlite3.Connection,
    table: str,
    allowed: set[str],
    values: dict[str, Any],
    where: str,
    params: tuple[Any, ...],
) -> None:
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"cannot update {table} columns {sorted(unknown)}")
    if not values:
        return
    assignments = ", ".join(f"{column} = ?" for column in values)
    conn.execute(
        f"UPDATE {table} SET {assignments} WHERE {where}",
        [v.value if isinstance(v, RunStatus | StageStatus) else v for v in values.values()]
        + list(params),
    )


class RunStore:
    """Runs, stages and events on top of :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_run(self, run: RunRecord, idempotency_key: str = "") -> tuple[RunRecord, bool]:
        """Insert a queued run with its stages and first event.

        Returns the run and True, or the earlier run and False when
        ``idempotency_key`` was used before for the same repository
        (``run.repository``) by the same caller (``run.submitted_by``).
        ``run.number`` is assigned here.
        """

        def txn(conn: sqlite3.Connection) -> tuple[RunRecord, bool]:
            if idempotency_key:
                row = _idempotent_run_id(conn, run.repository, idempotency_key, run.submitted_by)
                if row is not None:
                    existing = _get_run(conn, row["run_id"])
                    assert existing is not None
                    return existing, False
            (number,) = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE pipeline = ?",
                (run.pipeline,),
            ).fetchone()
            run.number = number
            conn.execute(
                "INSERT INTO runs (id, number, pipeline, repository, ref, commit_sha,"
                " pipeline_path, trigger, status, reason, created_at, spec_json,"
                " concurrency_group, trace_id, span_id, ref_type, submitted_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id,
                    run.number,
                    run.pipeline,
                    run.repository,
                    run.ref,
                    run.commit,
                    run.pipeline_path,
                    run.trigger.value,
                    run.status.value,
                    run.reason,
                    run.created_at,
                    run.spec_json,
                    run.concurrency_group,
                    run.trace_id,
                    run.span_id,
                    run.ref_type,
                    run.submitted_by,
                ),
            )
            conn.executemany(
                "INSERT INTO stages (run_id, name, position, kind, needs_json, status)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (run.id, s.name, s.position, s.kind, json.dumps(s.needs), s.status.value)
                    for s in run.stages
                ],
            )
            event = _insert_event(
                conn, run.id, EventDraft(EventKind.RUN_STATUS, run_status=run.status)
            )
            run.last_event_seq = event.seq
            if idempotency_key:
                conn.execute(
                    "INSERT INTO idempotency_keys (caller, repository, key, run_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (run.submitted_by, run.repository, idempotency_key, run.id, run.created_at),
                )
            return run, True

        return await self.db.write(txn)

    async def update(
        self,
        run_id: str,
        event: EventDraft,
        *,
        run: dict[str, Any] | None = None,
        stage: dict[str, Any] | None = None,
    ) -> EventRecord:
        """Apply run and/or stage column changes and append ``event``, atomically.

        Stage changes apply to the stage named by ``event.stage``. On a full
        disk the write waits for space (``hold``, see :meth:`Database.write`):
        run and stage state is never dropped.
        """
        return (await self.update_all(run_id, [Update(event, run, stage)]))[0]

    async def update_all(self, run_id: str, updates: list[Update]) -> list[EventRecord]:
        """:meth:`update` for each of ``updates``, in order, in one
        transaction: all are stored or none."""

        def txn(conn: sqlite3.Connection) -> list[EventRecord]:
            records: list[EventRecord] = []
            for event, run, stage in updates:
                if run:
                    _update(conn, "runs", _RUN_COLUMNS, run, "id = ?", (run_id,))
                if stage:
                    _update(
                        conn,
                        "stages",
                        _STAGE_COLUMNS,
                        stage,
                        "run_id = ? AND name = ?",
                        (run_id, event.stage),
                    )
                records.append(_insert_event(conn, run_id, event))
            return records

        return await self.db.write(txn, hold=True)

    async def set_trace(self, run_id: str, trace_id: str, span_id: str) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE runs SET trace_id = ?, span_id = ? WHERE id = ?",
                (trace_id, span_id, run_id),
            )

        await self.db.write(txn)

    async def run_for_idempotency_key(
        self, repository: str, key: str, caller: str = ""
    ) -> RunRecord | None:
        """The run ``caller`` (an identity; "" with authentication off)
        submitted for ``repository`` with idempotency ``key``, if any."""

        def query(conn: sqlite3.Connection) -> RunRecord | None:
            row = _idempotent_run_id(conn, repository, key, caller)
            return _get_run(conn, row["run_id"]) if row else None

        return await self.db.read(query)

    async def run_progress(self, run_id: str) -> tuple[RunStatus, int] | None:
        """A run's status and latest event number, without its stages."""

        def query(conn: sqlite3.Connection) -> tuple[RunStatus, int] | None:
            row = conn.execute(
                "SELECT status, last_event_seq FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            return (RunStatus(row["status"]), row["last_event_seq"]) if row else None

        return await self.db.read(query)

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self.db.read(lambda conn: _get_run(conn, run_id))

    async def list_runs(
        self, filt: RunFilter, *, limit: int, before_id: str = ""
    ) -> list[RunRecord]:
        """Newest first; ``before_id`` continues a previous page."""

        def query(conn: sqlite3.Connection) -> list[RunRecord]:
            clauses: list[str] = []
            params: list[Any] = []
            if filt.pipeline:
                clauses.append("pipeline = ?")
                params.append(filt.pipeline)
            if filt.status is not None:
                clauses.append("status = ?")
                params.append(filt.status.value)
            if filt.commit_prefix:
                clauses.append("commit_sha >= ? AND commit_sha < ?")
                params += [filt.commit_prefix, filt.commit_prefix + "g"]
            if before_id:
                clauses.append("id < ?")
                params.append(before_id)
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            rows = conn.execute(
                f"SELECT * FROM runs {where} ORDER BY id DESC LIMIT ?", [*params, limit]
            )
            runs = [_run_from_row(row) for row in rows]
            _load_stages(conn, runs)
            return runs

        return await self.db.read(query)

    async def events_after(self, run_id: str, seq: int, limit: int = 500) -> list[EventRecord]:
        def query(conn: sqlite3.Connection) -> list[EventRecord]:
            rows = conn.execute(
                "SELECT * FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (run_id, seq, limit),
            )
            return [_event_from_row(row) for row in rows]

        return await self.db.read(query)

    def recover_sync(self, reason: str) -> Recovery:
        """Close out runs left in flight by a daemon that stopped without finishing them.

        Running runs become interrupted (their unfinished stages too) with
        ``reason``. Returns those runs' ids, and the ids of still-queued runs,
        oldest first, to be scheduled again.
        Called once at start-up, before the scheduler starts runs.
        """
        return self.db.write_sync(self._recovery(reason))

    async def recover(self, reason: str, *, hold: bool = False) -> Recovery:
        """:meth:`recover_sync` from the loop; with ``hold``, waiting for
        free space on a full disk (see :meth:`Database.write`)."""
        return await self.db.write(self._recovery(reason), hold=hold)

    def _recovery(self, reason: str) -> Callable[[sqlite3.Connection], Recovery]:
        """The transaction of :meth:`recover_sync`."""

        def txn(conn: sqlite3.Connection) -> Recovery:
            now = time.time()
            running = [
                row["id"] for row in conn.execute("SELECT id FROM runs WHERE status = 'running'")
            ]
            for run_id in running:
                rows = conn.execute(
                    "SELECT name, status, needs_json FROM stages WHERE run_id = ?"
                    " ORDER BY position",
                    (run_id,),
                ).fetchall()
                succeeded = {r["name"] for r in rows if r["status"] == StageStatus.SUCCEEDED}
                for row in rows:
                    if row["status"] not in (StageStatus.PENDING, StageStatus.RUNNING):
                        continue
                    # A stage whose needs had all succeeded was due to run: its
                    # process may have started while its `running` record was
                    # being committed (they happen at once), so it is
                    # interrupted, not skipped.
                    started = row["status"] == StageStatus.RUNNING or succeeded.issuperset(
                        json.loads(row["needs_json"])
                    )
                    status = StageStatus.INTERRUPTED if started else StageStatus.SKIPPED
                    why = reason if started else "run was interrupted"
                    _update(
                        conn,
                        "stages",
                        _STAGE_COLUMNS,
                        {"status": status, "reason": why, "finished_at": now},
                        "run_id = ? AND name = ?",
                        (run_id, row["name"]),
                    )
                    _insert_event(
                        conn,
                        run_id,
                        EventDraft(
                            EventKind.STAGE_STATUS,
                            stage=row["name"],
                            stage_status=status,
                            message=why,
                        ),
                    )
                _update(
                    conn,
                    "runs",
                    _RUN_COLUMNS,
                    {"status": RunStatus.INTERRUPTED, "reason": reason, "finished_at": now},
                    "id = ?",
                    (run_id,),
                )
                _insert_event(
                    conn,
                    run_id,
                    EventDraft(
                        EventKind.RUN_STATUS, run_status=RunStatus.INTERRUPTED, message=reason
                    ),
                )
            queued = [
                row["id"]
                for row in conn.execute("SELECT id FROM runs WHERE status = 'queued' ORDER BY id")
            ]
            return Recovery(interrupted=running, queued=queued)

        return txn


#: The caller scope of idempotency keys stored before callers had identities.
_NO_CALLER = ""


def _idempotent_run_id(
    conn: sqlite3.Connection, repository: str, key: str, caller: str
) -> sqlite3.Row | None:
    """Keys are scoped by caller (the submitting identity) and repository;
    a key stored before callers had identities (no caller) still matches."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT run_id FROM idempotency_keys WHERE caller IN (?, ?) AND repository = ? AND key = ?"
        " ORDER BY caller DESC LIMIT 1",
        (caller, _NO_CALLER, repository, key),
    ).fetchone()
    return row


def _get_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    run = _run_from_row(row)
    _load_stages(conn, [run])
    return run
