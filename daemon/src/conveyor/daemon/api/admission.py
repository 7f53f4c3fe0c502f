"""What gets into the daemon: one gRPC server interceptor.

For every ``ConveyorService`` call it first authenticates the caller and,
once the request passed the checks below, authorizes it against the
permission table (see :mod:`conveyor.daemon.auth.gate`): no or bad
credentials are UNAUTHENTICATED, a role without the right
PERMISSION_DENIED, both audited. The servicer then runs with the caller as
the current principal (:func:`conveyor.daemon.auth.current_principal`).
Health checking is open; reflection is authenticated when the setting
``reflection`` says so.

For every ``ConveyorService`` call it also turns an undecodable request (garbage,
a truncated message, invalid UTF-8 in a string) into INVALID_ARGUMENT instead
of grpcio's INTERNAL, and checks the request against the limits table
(:func:`conveyor.daemon.api.limits.check_request`). For every streaming call
of any service it takes a stream slot, or answers RESOURCE_EXHAUSTED with a
retry hint: each open stream holds one gRPC worker thread, so the slots stay
below the pool and unary calls and health checks always find a thread.

All of it runs in the worker thread of the call, never in the trio loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import Message

from conveyor.daemon.api.bridge import abort
from conveyor.daemon.api.limits import check_request
from conveyor.daemon.auth.gate import Gate, rule_of
from conveyor.daemon.auth.identity import ANONYMOUS, Principal, acting_as
from conveyor.daemon.errors import ConveyorError, InvalidArgument, ResourceExhausted

#: Seconds a client refused a stream slot is told to wait.
STREAM_RETRY_AFTER = 1.0
#: Method prefix of the reflection services.
REFLECTION_PREFIX = "/grpc.reflection."

Behaviour = Callable[[Any, grpc.ServicerContext], Any]
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.ServerInterceptor


class _Undecodable:
    """Stands in for a request that did not parse, so the call can say why."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    actual = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return actual(data)
        except Exception as exc:  # DecodeError, mostly; whatever it is, the bytes are bad
            return _Undecodable(exc)

    return deserialize


def _check(request: Any) -> None:
    """Raise InvalidArgument for a request that did not decode or breaks a limit."""
    if isinstance(request, _Undecodable):
        raise InvalidArgument(f"the request could not be decoded: {request.error}")
    if isinstance(request, Message):
        check_request(request)


def _admit(request: Any, context: grpc.ServicerContext) -> None:
    try:
        _check(request)
    except InvalidArgument as exc:
        abort(context, exc)


class Admission(_Interceptor):
    """Authenticates and authorizes calls (with ``gate``; without one every
    caller is an anonymous admin), checks ``service``'s requests; bounds
    open streams to ``stream_slots``. ``authenticated_reflection``: callers
    of the reflection services must be authenticated too."""

    def __init__(
        self,
        service: str,
        stream_slots: int,
        gate: Gate | None = None,
        *,
        authenticated_reflection: bool = False,
    ) -> None:
        self._prefix = f"/{service}/"
        self._gate = gate
        self._authenticated_reflection = authenticated_reflection
        self.stream_slots = stream_slots
        self._open = 0
        self._lock = threading.Lock()
        self._handlers: dict[str, Handler] = {}

    @property
    def open_streams(self) -> int:
        return self._open

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        checked = method.startswith(self._prefix)
        guarded = checked or (
            self._authenticated_reflection and method.startswith(REFLECTION_PREFIX)
        )
        wrapped = self._wrap(handler, method, checked=checked, guarded=guarded)
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, handler: Handler, method: str, *, checked: bool, guarded: bool) -> Handler:
        deserializer = _lenient(handler.request_deserializer) if checked else None
        deserializer = deserializer or handler.request_deserializer
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            if not checked:
                return handler
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), deserializer, serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method, checked=checked, guarded=guarded),
                deserializer,
                serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(handler.stream_stream, method, checked=False, guarded=guarded),
                deserializer,
                serializer,
            )
        return handler

    def _caller(self, request: Any, context: grpc.ServicerContext, method: str) -> Principal:
        """Authenticate, check the request, authorize: the principal, or the
        call ends (UNAUTHENTICATED, INVALID_ARGUMENT, PERMISSION_DENIED)."""
        gate = self._gate
        if gate is None:
            _admit(request, context)
            return ANONYMOUS
        try:
            principal = gate.authenticate(context, method, request)
        except ConveyorError as exc:
            abort(context, exc)
        rule = rule_of(method)
        try:
            _check(request)
        except InvalidArgument as exc:
            if rule is not None and rule.audit:  # a refused attempt at a change
                gate.refused(principal, method, rule, request, exc)
            abort(context, exc)
        try:
            gate.authorize(principal, method, rule, request)
        except ConveyorError as exc:
            abort(context, exc)
        return principal

    def _unary(self, behaviour: Behaviour, method: str) -> Behaviour:
        rule = rule_of(method)
        gate = self._gate

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            principal = self._caller(request, context, method)
            with acting_as(principal):
                if gate is not None and rule is not None and rule.audit:
                    return gate.audited(principal, method, rule, request, context, behaviour)
                return behaviour(request, context)

        return unary

    def _stream(
        self, behaviour: Behaviour, method: str, *, checked: bool, guarded: bool
    ) -> Behaviour:
        rule = rule_of(method)
        gate = self._gate

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # who is calling is settled before the call may hold a stream slot
            if checked:
                principal = self._caller(request, context, method)
            elif guarded and gate is not None:
                try:
                    principal = gate.authenticate(context, method)
                except ConveyorError as exc:
                    abort(context, exc)
            else:
                principal = ANONYMOUS
            self._take_slot(context)
            try:
                with acting_as(principal):
                    responses = behaviour(request, context)
                    if checked and gate is not None and rule is not None and rule.audit:
                        responses = gate.audited_stream(
                            principal, method, rule, request, context, responses
                        )
                    yield from responses
            finally:
                with self._lock:
                    self._open -= 1

        return stream

    def _take_slot(self, context: grpc.ServicerContext) -> None:
        with self._lock:
            if self._open < self.stream_slots:
                self._open += 1
                return
        abort(
            context,
            ResourceExhausted(
                f"{self.stream_slots} streams are open, the most this daemon serves at once"
                f" (setting max_streams); close one or retry in {STREAM_RETRY_AFTER:g}s",
                retry_after=STREAM_RETRY_AFTER,
            ),
        )
