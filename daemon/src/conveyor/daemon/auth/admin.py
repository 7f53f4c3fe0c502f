"""The admin side of access control: tokens issued, listed and revoked,
and the audit log read. Runs in the trio loop; the API checked that the
caller may do it (permissions ``tokens.manage`` and ``audit.read``)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import trio

from conveyor.daemon.auth.access import AccessControl
from conveyor.daemon.auth.identity import Principal
from conveyor.daemon.auth.permissions import RoleName, parse_roles
from conveyor.daemon.auth.policy import MAX_ROLES, resolve_folders
from conveyor.daemon.auth.tokens import TokenRecord, digest, new_token
from conveyor.daemon.errors import FailedPrecondition, InvalidArgument, NotFound
from conveyor.daemon.store.audit import AuditFilter, AuditRecord

#: Token lifetime when the request does not say.
DEFAULT_TOKEN_SECONDS = 90 * 86400
#: The longest lifetime a token may be given.
MAX_TOKEN_SECONDS = 3650 * 86400
MAX_AUDIT_PAGE = 500


@dataclass(frozen=True)
class TokenRequest:
    name: str
    identity: str
    roles: list[str]
    repositories: list[str]
    expires_in_seconds: int = 0


class AccessAdmin:
    def __init__(self, access: AccessControl) -> None:
        self.access = access

    async def issue_token(
        self, caller: Principal, request: TokenRequest
    ) -> tuple[TokenRecord, str]:
        """A new token and its secret (the only time the secret exists
        outside the caller). Raises InvalidArgument naming the field."""
        if not request.name.strip():
            raise InvalidArgument("name is required: say what the token is for", field="name")
        if not request.identity.strip():
            raise InvalidArgument(
                "identity is required: the identity calls with the token act as",
                field="identity",
            )
        if len(request.roles) > MAX_ROLES:
            raise InvalidArgument(f"roles: at most {MAX_ROLES} roles", field="roles")
        try:
            roles = parse_roles(request.roles)
        except ValueError as exc:
            raise InvalidArgument(f"roles: {exc}", field="roles") from None
        seconds = request.expires_in_seconds or DEFAULT_TOKEN_SECONDS
        if not 0 < seconds <= MAX_TOKEN_SECONDS:
            raise InvalidArgument(
                f"expires_in_seconds must be between 1 and {MAX_TOKEN_SECONDS} (10 years),"
                " or 0 for 90 days",
                field="expires_in_seconds",
            )
        try:
            folders = await trio.to_thread.run_sync(
                resolve_folders, list(request.repositories), "repositories"
            )
        except ValueError as exc:
            raise InvalidArgument(str(exc), field="repositories") from None
        if (
            not folders
            and any(role.name is RoleName.DEVELOPER for role in roles)
            and not any(role.name is RoleName.ADMIN for role in roles)
        ):
            raise InvalidArgument(
                "repositories: a developer token needs the folders it may build repositories"
                " under (--repository /srv/git/team)",
                field="repositories",
            )
        now = time.time()
        for _ in range(5):
            token_id, secret = new_token()
            record = TokenRecord(
                id=token_id,
                name=request.name.strip(),
                identity=request.identity.strip(),
                roles=tuple(sorted(str(role) for role in roles)),
                repositories=folders,
                digest=digest(secret),
                created_at=now,
                created_by=caller.identity,
                expires_at=now + seconds,
            )
            try:
                await self.access.token_store.insert(record)
            except sqlite3.IntegrityError:
                continue  # the id (48 random bits) was taken: draw another
            self.access.tokens.put(record)
            return record, secret
        raise RuntimeError("could not find a free token id")

    def list_tokens(self, include_inactive: bool) -> list[TokenRecord]:
        now = time.time()
        records = [r for r in self.access.tokens.all() if include_inactive or r.active(now)]
        return sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)

    async def revoke_token(self, caller: Principal, token_id: str) -> TokenRecord:
        """Revoke a token at once. NotFound for an unknown id,
        FailedPrecondition for one already revoked."""
        if not token_id:
            raise InvalidArgument("token_id is required", field="token_id")
        known = self.access.tokens.get(token_id)
        if known is None:
            raise NotFound(f"no token {token_id} (see ListTokens)", field="token_id")
        if known.revoked_at is not None:
            raise FailedPrecondition(
                f"token {token_id} is already revoked (by {known.revoked_by})", field="token_id"
            )
        record = await self.access.token_store.revoke(token_id, time.time(), caller.identity)
        if record is None:
            raise NotFound(f"no token {token_id}", field="token_id")
        self.access.tokens.put(record)
        return record

    async def list_audit(
        self, filt: AuditFilter, page_size: int, page_token: str
    ) -> tuple[list[AuditRecord], str]:
        if not 0 <= page_size <= MAX_AUDIT_PAGE:
            raise InvalidArgument(
                f"page_size must be between 1 and {MAX_AUDIT_PAGE}", field="page_size"
            )
        if page_token and not page_token.isdigit():
            raise InvalidArgument("page_token is malformed", field="page_token")
        size = page_size or 50
        records = await self.access.audit.list(
            filt, limit=size + 1, before_seq=int(page_token or 0)
        )
        next_token = str(records[size - 1].seq) if len(records) > size else ""
        return records[:size], next_token
