"""Who is calling: credentials to a :class:`Principal`, for every call.

:meth:`AccessControl.authenticate` runs in the gRPC worker thread of each
call, before anything reaches the trio loop, and only reads memory: the
access policy, the token registry and the unix peer registry. The first
credential found decides, in this order:

1. a bearer token (``authorization: Bearer <token>`` metadata): its
   identity, roles and folders, as issued;
2. a client certificate (mutual TLS on a TCP listener): its subject's
   common name, with the roles and folders the access file gives it;
3. the unix socket peer's uid (``SO_PEERCRED``, see
   :mod:`conveyor.daemon.auth.unix`): its identity, roles and folders from
   the access file; the daemon's own user and root are admins.

Anything else is UNAUTHENTICATED. With ``auth = false`` every caller is
:data:`~conveyor.daemon.auth.identity.ANONYMOUS`, an admin.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from conveyor.daemon.auth.audit import AuditLog
from conveyor.daemon.auth.identity import ANONYMOUS, AuthMethod, Principal
from conveyor.daemon.auth.permissions import parse_roles
from conveyor.daemon.auth.policy import AccessPolicy, load_policy
from conveyor.daemon.auth.tokens import TokenRecord, TokenRegistry
from conveyor.daemon.auth.unix import ABSTRACT_PEER, PeerRegistry
from conveyor.daemon.errors import Unauthenticated
from conveyor.daemon.store.audit import AuditStore
from conveyor.daemon.store.database import Database
from conveyor.daemon.store.tokens import TokenStore

log = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str | bytes]]

NO_CREDENTIALS = (
    "no credentials: send a bearer token (metadata `authorization: Bearer <token>`;"
    " the CLI reads CONVEYOR_TOKEN, CONVEYOR_TOKEN_FILE or --token-file) or a client"
    " certificate; only the unix socket knows its callers without one"
)


def bearer_token(metadata: Metadata) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, None
    without one. Raises Unauthenticated for another scheme or two headers."""
    found: str | None = None
    for key, value in metadata:
        if key != "authorization":
            continue
        if found is not None:
            raise Unauthenticated("more than one authorization header")
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization header must read `Bearer <token>`")
        found = token.strip()
    return found


class AccessControl:
    """The access policy (reloadable), tokens, unix peers and the audit log."""

    def __init__(
        self,
        *,
        enabled: bool,
        policy: AccessPolicy,
        locate_policy: Callable[[], Path | None],
        tokens: TokenRegistry,
        token_store: TokenStore,
        audit: AuditLog,
        peers: PeerRegistry | None = None,
        client_certificates: bool = False,
    ) -> None:
        self.enabled = enabled
        self.policy = policy
        #: Where the access file is now (blocking: it may look for the file).
        self.locate_policy = locate_policy
        self.tokens = tokens
        self.token_store = token_store
        self.audit = audit
        self.peers = peers if peers is not None else PeerRegistry()
        #: Whether TCP listeners ask for client certificates.
        self.client_certificates = client_certificates
        self._token_principals: dict[str, tuple[AccessPolicy, Principal]] = {}
        self._certificate_principals: dict[str, tuple[AccessPolicy, Principal]] = {}

    @classmethod
    async def open(
        cls,
        db: Database,
        *,
        enabled: bool,
        locate_policy: Callable[[], Path | None] = lambda: None,
        client_certificates: bool = False,
    ) -> AccessControl:
        """Read the access file (``locate_policy()`` says where, None: no
        file) and the tokens. Raises AccessFileError."""
        policy = await trio.to_thread.run_sync(lambda: load_policy(locate_policy()))
        token_store = TokenStore(db)
        tokens = TokenRegistry(await token_store.all())
        audit = AuditLog(AuditStore(db), trio.lowlevel.current_trio_token())
        return cls(
            enabled=enabled,
            policy=policy,
            locate_policy=locate_policy,
            tokens=tokens,
            token_store=token_store,
            audit=audit,
            client_certificates=client_certificates,
        )

    async def reload_policy(self) -> bool:
        """Read the access file again (SIGHUP); on an error, log it and keep
        the policy in force. Returns whether the new one is in force."""
        try:
            policy = await trio.to_thread.run_sync(lambda: load_policy(self.locate_policy()))
        except Exception as exc:
            log.error("access file not reloaded, the previous policy stays in force: %s", exc)
            return False
        self.policy = policy
        log.info("access file reloaded (%s)", policy.source or "defaults: no access file")
        return True

    # -- per call, in gRPC worker threads -------------------------------------------

    def authenticate(
        self, metadata: Metadata, peer: str, auth_context: Callable[[], Mapping[str, Any]]
    ) -> Principal:
        """The caller of a call, from its ``metadata``, its gRPC ``peer``
        address and (for client certificates) its ``auth_context``. Raises
        :class:`Unauthenticated` saying what is missing or wrong."""
        if not self.enabled:
            return ANONYMOUS
        policy = self.policy
        local = self.peers.get(peer) if peer.startswith(ABSTRACT_PEER) else None
        where = local.credentials.describe() if local is not None else peer
        token = bearer_token(metadata)
        if token is not None:
            record = self.tokens.check(token)
            return dataclasses.replace(self._token_principal(record, policy), peer=where)
        if local is not None:
            return local.principal(policy)
        if self.client_certificates and not peer.startswith("unix"):
            names = auth_context().get("x509_common_name") or []
            if names:
                common_name = names[0].decode("utf-8", errors="replace")
                principal = self._certificate_principal(common_name, policy)
                return dataclasses.replace(principal, peer=where)
            raise Unauthenticated("the client certificate has no subject common name (CN)")
        raise Unauthenticated(NO_CREDENTIALS)

    def _token_principal(self, record: TokenRecord, policy: AccessPolicy) -> Principal:
        cached = self._token_principals.get(record.id)
        if cached is not None and cached[0] is policy:
            return cached[1]
        principal = Principal.create(
            record.identity,
            AuthMethod.TOKEN,
            parse_roles(record.roles),
            repositories=record.repositories,
            token_id=record.id,
            developers_cancel_any_run=policy.developers_cancel_any_run,
        )
        self._token_principals[record.id] = (policy, principal)
        return principal

    def _certificate_principal(self, common_name: str, policy: AccessPolicy) -> Principal:
        cached = self._certificate_principals.get(common_name)
        if cached is not None and cached[0] is policy:
            return cached[1]
        principal = policy.certificate_principal(common_name, "")
        if len(self._certificate_principals) > 4096:
            self._certificate_principals.clear()
        self._certificate_principals[common_name] = (policy, principal)
        return principal
