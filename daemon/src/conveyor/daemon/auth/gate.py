"""The check every call passes, in its gRPC worker thread: who is calling
(:meth:`AccessControl.authenticate`), may it (:data:`RULES`), and the
audit record of what came of it.

The API's admission interceptor calls :meth:`Gate.authenticate` before it
decodes the request's limits, :meth:`Gate.authorize` after, then runs the
servicer with the principal current (:func:`acting_as`) and, for audited
rules, through :meth:`Gate.audited`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from conveyor.daemon.auth.access import AccessControl
from conveyor.daemon.auth.audit import Outcome
from conveyor.daemon.auth.identity import Principal
from conveyor.daemon.auth.permissions import RULES, SCOPED, Rule
from conveyor.daemon.errors import PermissionDenied, Unauthenticated
from conveyor.daemon.store.audit import AuditRecord
from conveyor.v1 import auth_pb2, runs_pb2

log = logging.getLogger(__name__)

#: Field labels in audit targets ("run 01a2...", "token t_...").
_LABELS = {"run_id": "run", "token_id": "token"}
_MAX_DETAIL = 1024


def rule_of(method: str) -> Rule | None:
    return RULES.get(method)


def action_of(method: str) -> str:
    """``SubmitRun`` for ``/conveyor.v1.ConveyorService/SubmitRun``."""
    return method.rsplit("/", 1)[-1]


def target_of(rule: Rule | None, request: Any) -> str:
    if rule is None or not isinstance(request, Message):
        return ""
    parts = []
    for name in rule.target:
        value = getattr(request, name, "")
        if value:
            parts.append(f"{_LABELS.get(name, name)} {value}")
    return " ".join(parts)[:_MAX_DETAIL]


def environment_of(rule: Rule | None, request: Any) -> str:
    if rule is None or not rule.environment_field or not isinstance(request, Message):
        return ""
    return str(getattr(request, rule.environment_field, ""))


def _peer(context: grpc.ServicerContext) -> str:
    return str(context.peer())


class Gate:
    """Authentication, authorization and auditing of calls."""

    def __init__(self, access: AccessControl) -> None:
        self.access = access

    def authenticate(
        self, context: grpc.ServicerContext, method: str, request: Any = None
    ) -> Principal:
        """The caller; raises Unauthenticated after recording the refusal."""
        try:
            return self.access.authenticate(
                context.invocation_metadata(), _peer(context), context.auth_context
            )
        except Unauthenticated as exc:
            peer = _peer(context)
            local = self.access.peers.get(peer)
            self._record(
                AuditRecord(
                    time=time.time(),
                    identity="",
                    auth_method="",
                    action=action_of(method),
                    target=target_of(rule_of(method), request),
                    environment=environment_of(rule_of(method), request),
                    outcome=str(Outcome.UNAUTHENTICATED),
                    code="UNAUTHENTICATED",
                    detail=str(exc)[:_MAX_DETAIL],
                    peer=local.credentials.describe() if local is not None else peer,
                    token_id=exc.token_id,
                )
            )
            raise

    def authorize(self, principal: Principal, method: str, rule: Rule | None, request: Any) -> None:
        """Raise PermissionDenied, after recording it, unless ``principal``
        may make this call."""
        environment = environment_of(rule, request)
        if rule is not None and principal.may(rule.permission, environment):
            return
        if rule is None:
            reason = f"{action_of(method)} has no permission rule: refused for everyone"
        else:
            roles = ", ".join(sorted(str(r) for r in principal.roles)) or "none"
            scope = f" in environment {environment!r}" if rule.permission in SCOPED else ""
            reason = (
                f"{principal.describe()} may not call {action_of(method)}: it needs the"
                f" {rule.permission} permission{scope}, which its roles ({roles}) do not grant"
            )
        error = PermissionDenied(reason)
        self._record(
            self._outcome(
                principal, method, rule, request, Outcome.DENIED, "PERMISSION_DENIED", reason
            )
        )
        raise error

    def refused(
        self, principal: Principal, method: str, rule: Rule, request: Any, error: Exception
    ) -> None:
        """Record an audited call refused before it ran (INVALID_ARGUMENT)."""
        self._record(
            self._outcome(
                principal, method, rule, request, Outcome.FAILED, "INVALID_ARGUMENT", str(error)
            )
        )

    def audited(
        self,
        principal: Principal,
        method: str,
        rule: Rule,
        request: Any,
        context: grpc.ServicerContext,
        behaviour: Callable[[Any, grpc.ServicerContext], Any],
    ) -> Any:
        """Run a unary ``behaviour`` and record its outcome."""
        try:
            response = behaviour(request, context)
        except BaseException:
            self._record_failure(principal, method, rule, request, context)
            raise
        self._record(
            self._outcome(principal, method, rule, request, Outcome.OK, "OK", _made(response))
        )
        return response

    def stream_succeeded(self, principal: Principal, method: str, rule: Rule, request: Any) -> None:
        """Record that an audited stream ended well (blocking: in a worker
        thread; the stream itself runs on the server's loop)."""
        self._record(self._outcome(principal, method, rule, request, Outcome.OK, "OK", ""))

    def stream_failed(
        self,
        principal: Principal,
        method: str,
        rule: Rule,
        request: Any,
        context: grpc.ServicerContext,
    ) -> None:
        """Record that an audited stream failed, with the status ``context``
        ended with (blocking: in a worker thread)."""
        self._record_failure(principal, method, rule, request, context)

    def _record_failure(
        self,
        principal: Principal,
        method: str,
        rule: Rule,
        request: Any,
        context: grpc.ServicerContext,
    ) -> None:
        code = context.code()  # type: ignore[attr-defined]
        name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        details = context.details()  # type: ignore[attr-defined]
        text = details.decode("utf-8", "replace") if isinstance(details, bytes) else details
        self._record(
            self._outcome(
                principal, method, rule, request, Outcome.of_code(name), name, str(text or "")
            )
        )

    def _outcome(
        self,
        principal: Principal,
        method: str,
        rule: Rule | None,
        request: Any,
        outcome: Outcome,
        code: str,
        detail: str,
    ) -> AuditRecord:
        return AuditRecord(
            time=time.time(),
            identity=principal.identity,
            auth_method=str(principal.method),
            token_id=principal.token_id,
            action=action_of(method),
            target=target_of(rule, request),
            environment=environment_of(rule, request),
            outcome=str(outcome),
            code=code,
            detail=detail[:_MAX_DETAIL],
            peer=principal.peer,
        )

    def _record(self, record: AuditRecord) -> None:
        self.access.audit.append_from_thread(record)


def _made(response: Any) -> str:
    """What an audited call made, for its record: a run, a token."""
    if isinstance(response, runs_pb2.SubmitRunResponse):
        text = f"run {response.run.id} #{response.run.number}"
        return text if response.created else f"{text} (existing run: same idempotency key)"
    if isinstance(response, runs_pb2.CancelRunResponse):
        return f"run {response.run.id} cancelled"
    if isinstance(response, auth_pb2.IssueTokenResponse | auth_pb2.RevokeTokenResponse):
        return f"token {response.token.id}"
    return ""
