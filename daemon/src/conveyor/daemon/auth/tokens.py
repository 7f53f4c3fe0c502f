"""Bearer tokens: made, checked, and kept hashed.

A token reads ``cvt_<id>_<secret>``: ``<id>`` (12 hex digits) is public
(listed, revoked and audited as ``t_<id>``), ``<secret>`` is 256 random bits
(43 URL-safe base64 characters). The daemon stores only the SHA-256 digest
of the whole token, shown once when it is issued. A plain hash is enough:
password KDFs (bcrypt, scrypt, Argon2) are slow on purpose to protect
guessable secrets against brute force, and nothing can brute-force 2^256
possibilities, fast hash or not; a fast hash also keeps the check of every
call in the microseconds.

Checks run in the gRPC worker threads against :class:`TokenRegistry`, an
in-memory copy of the tokens table kept current by the daemon (the only
writer), so authenticating a call never waits for the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from conveyor.daemon.errors import Unauthenticated

TOKEN_PREFIX = "cvt_"
ID_PREFIX = "t_"
_TOKEN_RE = re.compile(r"cvt_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class TokenRecord:
    """A token as stored: never its secret, only the secret's digest."""

    id: str
    name: str
    identity: str
    roles: tuple[str, ...]
    repositories: tuple[str, ...]
    digest: str
    created_at: float
    created_by: str
    expires_at: float
    revoked_at: float | None = None
    revoked_by: str = ""

    def active(self, now: float) -> bool:
        return self.revoked_at is None and now < self.expires_at


def digest(token: str) -> str:
    """The stored form of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh ``(token id, token)``."""
    hex_id = secrets.token_hex(6)
    return f"{ID_PREFIX}{hex_id}", f"{TOKEN_PREFIX}{hex_id}_{secrets.token_urlsafe(32)}"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenRegistry:
    """Every token (revoked and expired ones too, so a refusal can say
    why), by id. Reads from any thread; :meth:`put` replaces one record."""

    def __init__(self, records: Iterable[TokenRecord] = ()) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, TokenRecord] = {record.id: record for record in records}

    def put(self, record: TokenRecord) -> None:
        with self._lock:
            by_id = dict(self._by_id)
            by_id[record.id] = record
            self._by_id = by_id

    def get(self, token_id: str) -> TokenRecord | None:
        return self._by_id.get(token_id)

    def all(self) -> list[TokenRecord]:
        return list(self._by_id.values())

    def check(self, token: str, now: float | None = None) -> TokenRecord:
        """The active token ``token`` is; raises :class:`Unauthenticated`
        saying whether it is malformed, unknown, expired or revoked."""
        match = _TOKEN_RE.fullmatch(token)
        if match is None:
            raise Unauthenticated(
                "the bearer token is malformed: expected cvt_ followed by its id and secret,"
                " as `conveyor admin tokens issue` prints it"
            )
        record = self._by_id.get(ID_PREFIX + match.group(1))
        if record is None or not hmac.compare_digest(record.digest, digest(token)):
            raise Unauthenticated("the bearer token is not valid: no such token")
        now = time.time() if now is None else now
        if record.revoked_at is not None:
            raise Unauthenticated(
                f"the bearer token {record.id} ({record.name!r}) was revoked at"
                f" {_when(record.revoked_at)} by {record.revoked_by or 'an admin'}",
                token_id=record.id,
            )
        if now >= record.expires_at:
            raise Unauthenticated(
                f"the bearer token {record.id} ({record.name!r}) expired at"
                f" {_when(record.expires_at)}; ask an admin for a new one",
                token_id=record.id,
            )
        return record
