"""The audit log: who did (or tried) what, when, to what, and what came of it.

Every ConveyorService call whose rule says ``audit`` (the state-changing
ones: SubmitRun, CancelRun, IssueToken, RevokeToken, and the delivery
RPCs as they come) is recorded by the API's admission interceptor with its
outcome, and so is every refused call of any method (UNAUTHENTICATED,
PERMISSION_DENIED). Work that no RPC does directly (an automatic rollback,
an approval that completes a deployment) is recorded with
:meth:`AuditLog.record`, from the trio loop.

Records are only added: the store refuses to change or delete them, and no
RPC does either.
"""

from __future__ import annotations

import enum
import logging
import time

import trio

from conveyor.daemon.auth.identity import Principal
from conveyor.daemon.store.audit import AuditFilter, AuditRecord, AuditStore

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    OK = "ok"
    #: PERMISSION_DENIED: the caller is known, its roles do not allow it.
    DENIED = "denied"
    #: UNAUTHENTICATED: no or bad credentials.
    UNAUTHENTICATED = "unauthenticated"
    #: Any other error.
    FAILED = "failed"

    @classmethod
    def of_code(cls, code: str) -> Outcome:
        """The outcome of a call that ended with the gRPC status ``code``."""
        return {
            "OK": cls.OK,
            "PERMISSION_DENIED": cls.DENIED,
            "UNAUTHENTICATED": cls.UNAUTHENTICATED,
        }.get(code, cls.FAILED)


class AuditLog:
    """Appends audit records, from the trio loop or from a gRPC worker thread."""

    def __init__(self, store: AuditStore, trio_token: trio.lowlevel.TrioToken) -> None:
        self.store = store
        self._token = trio_token

    async def record(
        self,
        principal: Principal,
        action: str,
        target: str,
        outcome: Outcome = Outcome.OK,
        *,
        code: str = "",
        detail: str = "",
        environment: str = "",
    ) -> None:
        """Record that ``principal`` did (or tried) ``action`` on ``target``.

        For delivery code: call it for every deploy, promote, rollback and
        approval the daemon carries out on its own (use
        :data:`~conveyor.daemon.auth.identity.DAEMON` as the principal for
        automatic ones); calls made through an audited RPC are already
        recorded by the API. ``code`` defaults to the outcome's usual gRPC
        code. A record that cannot be stored (a full disk) is logged, not
        raised: the action itself has happened.
        """
        await self.append(
            AuditRecord(
                time=time.time(),
                identity=principal.identity,
                auth_method=str(principal.method),
                token_id=principal.token_id,
                action=action,
                target=target,
                environment=environment,
                outcome=str(outcome),
                code=code or _CODES[outcome],
                detail=detail,
                peer=principal.peer,
            )
        )

    async def append(self, record: AuditRecord) -> None:
        try:
            await self.store.append(record)
        except Exception as exc:
            log.error(
                "cannot record the audit event %s %s by %r (%s): %s",
                record.action,
                record.outcome,
                record.identity,
                record.target,
                exc,
            )

    def append_from_thread(self, record: AuditRecord) -> None:
        """:meth:`append` from a gRPC worker thread: waits until it is stored."""
        try:
            trio.from_thread.run(self.append, record, trio_token=self._token)
        except trio.RunFinishedError:
            log.error("the daemon stopped before the audit event %s could be stored", record)

    async def list(
        self, filt: AuditFilter, *, limit: int, before_seq: int = 0
    ) -> list[AuditRecord]:
        return await self.store.list(filt, limit=limit, before_seq=before_seq)


_CODES = {
    Outcome.OK: "OK",
    Outcome.DENIED: "PERMISSION_DENIED",
    Outcome.UNAUTHENTICATED: "UNAUTHENTICATED",
    Outcome.FAILED: "UNKNOWN",
}
