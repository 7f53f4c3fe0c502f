"""Bearer tokens as stored: their digests, never their secrets."""

from __future__ import annotations

import json
import sqlite3

from conveyor.daemon.auth.tokens import TokenRecord
from conveyor.daemon.store.database import Database


def _from_row(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        name=row["name"],
        identity=row["identity"],
        roles=tuple(json.loads(row["roles_json"])),
        repositories=tuple(json.loads(row["repositories_json"])),
        digest=row["digest"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
    )


class TokenStore:
    """The ``api_tokens`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[TokenRecord]:
        def query(conn: sqlite3.Connection) -> list[TokenRecord]:
            return [_from_row(row) for row in conn.execute("SELECT * FROM api_tokens")]

        return await self.db.read(query)

    async def insert(self, record: TokenRecord) -> None:
        """Store a new token; sqlite3.IntegrityError if its id is taken."""

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_tokens (id, name, identity, roles_json, repositories_json,"
                " digest, created_at, created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.identity,
                    json.dumps(list(record.roles)),
                    json.dumps(list(record.repositories)),
                    record.digest,
                    record.created_at,
                    record.created_by,
                    record.expires_at,
                ),
            )

        await self.db.write(txn)

    async def revoke(self, token_id: str, at: float, by: str) -> TokenRecord | None:
        """Mark a token revoked (once: a revoked token keeps its first
        revocation); the token as stored after, or None for an unknown id."""

        def txn(conn: sqlite3.Connection) -> TokenRecord | None:
            conn.execute(
                "UPDATE api_tokens SET revoked_at = ?, revoked_by = ?"
                " WHERE id = ? AND revoked_at IS NULL",
                (at, by, token_id),
            )
            row = conn.execute("SELECT * FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
            return _from_row(row) if row is not None else None

        return await self.db.write(txn)
