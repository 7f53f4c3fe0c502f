"""The audit log as stored: append and read, nothing else.

The table refuses UPDATE and DELETE itself (triggers), so even a bug in the
daemon cannot rewrite history through this connection.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from conveyor.daemon.store.database import Database


@dataclass(frozen=True)
class AuditRecord:
    """One audit event (see ``AuditEvent`` in audit.proto)."""

    time: float
    identity: str
    auth_method: str
    action: str
    target: str
    outcome: str
    code: str
    detail: str = ""
    peer: str = ""
    environment: str = ""
    token_id: str = ""
    #: Assigned when stored.
    seq: int = 0


@dataclass(frozen=True)
class AuditFilter:
    identity: str = ""
    action: str = ""
    #: Only events at or after this time (seconds; 0: all).
    since: float = 0.0


_COLUMNS = (
    "time",
    "identity",
    "auth_method",
    "token_id",
    "action",
    "target",
    "environment",
    "outcome",
    "code",
    "detail",
    "peer",
)


def _from_row(row: sqlite3.Row) -> AuditRecord:
    return AuditRecord(seq=row["seq"], **{column: row[column] for column in _COLUMNS})


class AuditStore:
    """The ``audit_events`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, record: AuditRecord) -> int:
        """Store ``record``; returns its sequence number."""
        values = [getattr(record, column) for column in _COLUMNS]

        def txn(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                f"INSERT INTO audit_events ({', '.join(_COLUMNS)})"
                f" VALUES ({', '.join('?' * len(_COLUMNS))})",
                values,
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return await self.db.write(txn)

    async def list(
        self, filt: AuditFilter, *, limit: int, before_seq: int = 0
    ) -> list[AuditRecord]:
        """Newest first; ``before_seq`` continues a previous page."""

        def query(conn: sqlite3.Connection) -> list[AuditRecord]:
            clauses: list[str] = []
            params: list[Any] = []
            if filt.identity:
                clauses.append("identity = ?")
                params.append(filt.identity)
            if filt.action:
                clauses.append("action = ?")
                params.append(filt.action)
            if filt.since:
                clauses.append("time >= ?")
                params.append(filt.since)
            if before_seq:
                clauses.append("seq < ?")
                params.append(before_seq)
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            rows = conn.execute(
                f"SELECT * FROM audit_events {where} ORDER BY seq DESC LIMIT ?", [*params, limit]
            )
            return [_from_row(row) for row in rows]

        return await self.db.read(query)
