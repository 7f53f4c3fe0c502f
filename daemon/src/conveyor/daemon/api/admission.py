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
(:func:`conveyor.daemon.api.limits.check_request`). It bounds what is in
progress, answering RESOURCE_EXHAUSTED with a retry hint beyond:
``ConveyorService`` unary calls (setting ``max_concurrent_rpcs``) and open
streams of any service (``max_streams``). A stream holds no thread (see
:mod:`conveyor.daemon.api.loop`), so the bound on streams is one of memory,
and health checks never wait behind streams.

The interceptor runs on the server's asyncio loop; the checks that may wait
(authentication, authorization and audit records, which wait for the
store) run in a worker thread of the server's pool (``executor``), never in
the trio loop and never on the server's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf.message import Message

from conveyor.daemon.api.bridge import abort, abort_async, status_of
from conveyor.daemon.api.limits import check_request
from conveyor.daemon.api.loop import ThreadContext, in_worker
from conveyor.daemon.auth.gate import Gate, rule_of
from conveyor.daemon.auth.identity import ANONYMOUS, Principal, acting_as
from conveyor.daemon.errors import ConveyorError, InvalidArgument, ResourceExhausted

#: Seconds a client refused a stream slot, or a call, is told to wait.
STREAM_RETRY_AFTER = 1.0
CALL_RETRY_AFTER = 1.0
#: Method prefix of the reflection services.
REFLECTION_PREFIX = "/grpc.reflection."

Behaviour = Callable[[Any, grpc.ServicerContext], Any]
AioContext = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor


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
    open streams to ``stream_slots`` and ``service``'s unary calls in
    progress to ``max_calls`` (0: unbounded). ``authenticated_reflection``:
    callers of the reflection services must be authenticated too.
    ``executor`` runs the unary servicers and the checks that may wait."""

    def __init__(
        self,
        service: str,
        stream_slots: int,
        gate: Gate | None = None,
        *,
        executor: Executor,
        max_calls: int = 0,
        authenticated_reflection: bool = False,
    ) -> None:
        self._prefix = f"/{service}/"
        self._gate = gate
        self._executor = executor
        self._authenticated_reflection = authenticated_reflection
        self.stream_slots = stream_slots
        self.max_calls = max_calls
        self._open = 0
        self._calls = 0
        self._lock = threading.Lock()
        self._handlers: dict[str, Handler] = {}

    @property
    def open_streams(self) -> int:
        return self._open

    async def intercept_service(  # type: ignore[override]
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
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
        call ends (UNAUTHENTICATED, INVALID_ARGUMENT, PERMISSION_DENIED).
        In a worker thread."""
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

    def _unary(self, behaviour: Behaviour, method: str) -> Callable[[Any, AioContext], Any]:
        """``behaviour`` (a synchronous servicer method) in a worker thread,
        after the checks, as the caller."""
        rule = rule_of(method)
        gate = self._gate

        def in_thread(request: Any, context: grpc.ServicerContext) -> Any:
            principal = self._caller(request, context, method)
            with acting_as(principal):
                if gate is not None and rule is not None and rule.audit:
                    return gate.audited(principal, method, rule, request, context, behaviour)
                return behaviour(request, context)

        async def unary(request: Any, context: AioContext) -> Any:
            if not self._take(calls=True):
                await abort_async(context, status_of(self._too_many_calls()))
            try:
                return await in_worker(self._executor, in_thread, request, context)
            finally:
                self._give_back(calls=True)

        return unary

    def _stream(
        self, behaviour: Behaviour, method: str, *, checked: bool, guarded: bool
    ) -> Callable[[Any, AioContext], Any]:
        """``behaviour`` (an asynchronous generator, or a coroutine writing
        to its context) on the server's loop, once the checks (in a worker
        thread) let the call in and it has a stream slot."""
        rule = rule_of(method)
        gate = self._gate
        audited = checked and gate is not None and rule is not None and rule.audit

        def admit(request: Any, context: grpc.ServicerContext) -> Principal:
            if checked:
                return self._caller(request, context, method)
            if guarded and gate is not None:
                try:
                    return gate.authenticate(context, method)
                except ConveyorError as exc:
                    abort(context, exc)
            return ANONYMOUS

        async def enter(request: Any, context: AioContext) -> Principal:
            """Admit the call and take a stream slot (or end the call)."""
            principal = ANONYMOUS
            # who is calling is settled before the call may hold a stream slot
            if checked or (guarded and gate is not None):
                principal = await in_worker(self._executor, admit, request, context)
            if not self._take(calls=False):
                await abort_async(context, status_of(self._too_many_streams()))
            return principal

        if inspect.iscoroutinefunction(behaviour):
            # grpcio's other form of a stream: the servicer writes to the context

            async def writer(request: Any, context: AioContext) -> None:
                await enter(request, context)
                try:
                    await behaviour(request, context)  # type: ignore[arg-type]
                finally:
                    self._give_back(calls=False)

            return writer

        async def stream(request: Any, context: AioContext) -> AsyncIterator[Any]:
            principal = await enter(request, context)
            try:
                responses: AsyncIterator[Any] = behaviour(request, context)  # type: ignore[arg-type]
                if not audited:
                    async for response in responses:
                        yield response
                    return
                assert gate is not None and rule is not None
                loop = asyncio.get_running_loop()
                view = ThreadContext(context, loop)
                try:
                    async for response in responses:
                        yield response
                except BaseException:
                    await loop.run_in_executor(
                        self._executor, gate.stream_failed, principal, method, rule, request, view
                    )
                    raise
                await loop.run_in_executor(
                    self._executor, gate.stream_succeeded, principal, method, rule, request
                )
            finally:
                self._give_back(calls=False)

        return stream

    def _take(self, *, calls: bool) -> bool:
        """Count one more unary call (``calls``) or open stream; False when
        the bound is reached."""
        with self._lock:
            if calls:
                if self.max_calls and self._calls >= self.max_calls:
                    return False
                self._calls += 1
            else:
                if self._open >= self.stream_slots:
                    return False
                self._open += 1
            return True

    def _give_back(self, *, calls: bool) -> None:
        with self._lock:
            if calls:
                self._calls -= 1
            else:
                self._open -= 1

    def _too_many_streams(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"{self.stream_slots} streams are open, the most this daemon serves at once"
            f" (setting max_streams); close one or retry in {STREAM_RETRY_AFTER:g}s",
            retry_after=STREAM_RETRY_AFTER,
        )

    def _too_many_calls(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"{self.max_calls} calls are in progress, the most this daemon serves at once"
            f" (setting max_concurrent_rpcs); retry in {CALL_RETRY_AFTER:g}s",
            retry_after=CALL_RETRY_AFTER,
        )
