"""What gets into the daemon: one gRPC server interceptor.

For every ``ConveyorService`` call it turns an undecodable request (garbage,
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
from conveyor.daemon.errors import InvalidArgument, ResourceExhausted

#: Seconds a client refused a stream slot is told to wait.
STREAM_RETRY_AFTER = 1.0

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


def _admit(request: Any, context: grpc.ServicerContext) -> None:
    if isinstance(request, _Undecodable):
        abort(context, InvalidArgument(f"the request could not be decoded: {request.error}"))
    if isinstance(request, Message):
        try:
            check_request(request)
        except InvalidArgument as exc:
            abort(context, exc)


class Admission(_Interceptor):
    """Checks ``service``'s requests; bounds open streams to ``stream_slots``."""

    def __init__(self, service: str, stream_slots: int) -> None:
        self._prefix = f"/{service}/"
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
        wrapped = self._wrap(handler, checked=method.startswith(self._prefix))
        self._handlers[method] = wrapped
        return wrapped

    def _wrap(self, handler: Handler, *, checked: bool) -> Handler:
        deserializer = _lenient(handler.request_deserializer) if checked else None
        deserializer = deserializer or handler.request_deserializer
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            if not checked:
                return handler
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary), deserializer, serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, checked=checked), deserializer, serializer
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(handler.stream_stream, checked=False), deserializer, serializer
            )
        return handler

    def _unary(self, behaviour: Behaviour) -> Behaviour:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            _admit(request, context)
            return behaviour(request, context)

        return unary

    def _stream(self, behaviour: Behaviour, *, checked: bool) -> Behaviour:
        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self._take_slot(context)
            try:
                if checked:
                    _admit(request, context)
                yield from behaviour(request, context)
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
