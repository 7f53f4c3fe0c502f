"""Calls from the gRPC server into the trio loop.

grpcio has no trio support. The server runs grpcio's asyncio server on an
event loop in a thread of its own (see :mod:`conveyor.daemon.api.loop`).
Servicers never touch daemon state: they hand each call to the trio loop
with the :class:`trio.lowlevel.TrioToken` captured at start-up, and
translate domain errors into gRPC status codes.

- A unary call runs in a worker thread of the server's pool, which waits
  for the trio side (:meth:`TrioBridge.unary`).
- A server stream holds no thread: it is a trio task feeding a bounded
  hand-off queue that an asynchronous generator on the server's loop drains
  (:meth:`TrioBridge.stream`). When the client goes away or its deadline
  passes, grpcio cancels the generator, which cancels the trio task, so
  nothing keeps running for a client that left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, NoReturn, TypeVar

import grpc
import trio
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from conveyor.daemon.api.limits import MAX_ERROR_BYTES
from conveyor.daemon.errors import (
    ConveyorError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from conveyor.daemon.secrets.redaction import redact

log = logging.getLogger(__name__)

T = TypeVar("T")

_CODES: list[tuple[type[ConveyorError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
]
#: Longest field-violation description (the message says it in full).
_MAX_VIOLATION_BYTES = 512

#: Items buffered between a stream's trio task and its worker thread.
STREAM_BUFFER = 8


def _escaped(byte: int) -> bool:
    """Whether gRPC percent-encodes ``byte`` in the ``grpc-message`` trailer."""
    return byte < 0x20 or byte > 0x7E or byte == 0x25


def clip_message(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    """``text`` cut so that it takes at most ``limit`` bytes on the wire
    (percent-encoding included), with a note saying how much was left out."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit // 3 or (
        len(data) <= limit and len(data) + 2 * sum(map(_escaped, data)) <= limit
    ):
        return text
    budget, end = limit - 48, 0
    for byte in data:
        budget -= 3 if _escaped(byte) else 1
        if budget < 0:
            break
        end += 1
    head = data[:end].decode("utf-8", errors="ignore")
    return f"{head}... (message cut: {len(data) - len(head.encode())} more bytes)"


def rich_status(
    code: grpc.StatusCode, message: str, exc: BaseException | None = None
) -> grpc.Status:
    """A ``google.rpc.Status`` for ``code``: the message cut to
    :data:`MAX_ERROR_BYTES`, a ``BadRequest`` field violation when the error
    names a field, a ``RetryInfo`` when it says when to retry. Secret
    values the daemon holds are masked out of the message."""
    message = redact(message)  # errors may quote a pipeline file or a plugin
    status = status_pb2.Status(code=code.value[0], message=clip_message(message))
    field = getattr(exc, "field", "")
    if field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=field, description=clip_message(message, _MAX_VIOLATION_BYTES)
        )
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        status.details.append(detail)
    if isinstance(exc, ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after * 1e9))
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(detail)
    return rpc_status.to_status(status)


def status_of(exc: BaseException) -> grpc.Status:
    """The status a call ends with when ``exc`` ends it: the code of a
    domain error, INTERNAL (logged with its traceback) for anything else.
    The one place errors leave the daemon: see :func:`rich_status`."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return rich_status(code, str(exc), exc)
    log.error("internal error in %s", type(exc).__name__, exc_info=exc)
    return rich_status(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the call (in a worker thread) with the status of ``exc`` (see
    :func:`status_of`)."""
    context.abort_with_status(status_of(exc))
    raise AssertionError("unreachable: abort_with_status raises")


def abort_with(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the call (in a worker thread) with ``code`` and ``message`` (cut
    like every error message)."""
    context.abort_with_status(rich_status(code, message))
    raise AssertionError("unreachable: abort_with_status raises")


async def abort_async(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> NoReturn:
    """End the call (on the server's loop) with ``status``: raises grpcio's
    abort error, which the caller lets through. The code and details stay
    readable on ``context`` (for the audit record of the call)."""
    context.set_code(status.code)
    context.set_details(status.details)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: abort raises")


class _End:
    """Marks the end of a stream, carrying the error that ended it, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class TrioBridge:
    """Runs coroutines in the daemon's trio loop on behalf of gRPC threads."""

    def __init__(self, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self._token = token
        self._nursery = nursery
        self.active_streams = 0
        self._waker: _LoopWaker | None = None

    def _run(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(afn, *args, trio_token=self._token)

    def unary(
        self,
        context: grpc.ServicerContext,
        afn: Callable[..., Awaitable[T]],
        *args: Any,
    ) -> T:
        """Run ``afn(*args)`` in the trio loop, bounded by the call's deadline.

        Domain errors become status codes; the daemon stopping becomes
        UNAVAILABLE.
        """
        remaining = context.time_remaining()
        deadline = remaining if remaining is not None else math.inf

        async def call() -> T:
            with trio.fail_after(deadline):
                return await afn(*args)

        try:
            return self._run(call)
        except trio.TooSlowError:
            abort_with(context, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        except trio.RunFinishedError:
            abort_with(context, grpc.StatusCode.UNAVAILABLE, "the daemon is shutting down")
        except grpc.RpcError:
            raise
        except Exception as exc:
            abort(context, exc)

    async def stream(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        agen_fn: Callable[..., AsyncIterator[T]],
        *args: Any,
    ) -> AsyncIterator[T]:
        """Yield the items of ``agen_fn(*args)``, produced in the trio loop;
        iterate it on the server's asyncio loop.

        Cancellation: the producing task is cancelled when the client
        disconnects, its deadline passes, or the server stops (each cancels
        this generator).

        Resource handling: the hand-off holds at most :data:`STREAM_BUFFER`
        items, so a slow client slows its producer instead of growing memory;
        a waiting stream holds no thread.
        """
        scope = trio.CancelScope()
        loop = asyncio.get_running_loop()
        if self._waker is None or self._waker.loop is not loop:
            self._waker = _LoopWaker(loop)
        handoff: _Handoff[T] = _Handoff(self._token, self._waker, STREAM_BUFFER)

        async def produce() -> None:
            self.active_streams += 1
            end = _End()
            try:
                with scope:
                    async for item in agen_fn(*args):
                        await handoff.put(item)
            except Exception as exc:
                end = _End(exc)
            finally:
                self.active_streams -= 1
                handoff.finish(end)

        def stop() -> None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(scope.cancel)

        try:
            self._token.run_sync_soon(self._nursery.start_soon, produce)
        except trio.RunFinishedError:
            await abort_async(
                context, rich_status(grpc.StatusCode.UNAVAILABLE, "the daemon is shutting down")
            )
        try:
            while True:
                item = await handoff.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        await abort_async(context, status_of(item.error))
                    return
                yield item
        finally:
            stop()


class _LoopWaker:
    """Wakes readers waiting on an asyncio loop (in another thread) from
    the trio thread: one wake-up of the loop for all the readers woken
    before it runs, so an event fanned out to many streams costs the loop
    one wake-up (a write to its self-pipe), not one per stream."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._waiting: list[asyncio.Future[None]] = []

    def wake(self, reader: asyncio.Future[None]) -> None:
        with self._lock:
            self._waiting.append(reader)
            if len(self._waiting) > 1:
                return  # a wake-up is on its way
        with contextlib.suppress(RuntimeError):  # the server's loop is closed
            self.loop.call_soon_threadsafe(self._resolve_all)

    def _resolve_all(self) -> None:  # on the loop
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for reader in waiting:
            _resolve(reader)


class _Handoff(Generic[T]):
    """A bounded queue from one trio task to one asyncio task (on another
    thread's loop).

    Handing over an item costs the trio side a lock, and a wake-up of the
    asyncio loop only when its reader waits (shared with the other streams'
    readers woken meanwhile, see :class:`_LoopWaker`); only a full queue
    makes the producer wait (for a trio event the reader sets).
    """

    def __init__(self, token: trio.lowlevel.TrioToken, waker: _LoopWaker, size: int) -> None:
        self._token = token
        self._waker = waker
        self._size = size
        self._items: deque[T | _End] = deque()
        self._lock = threading.Lock()
        #: Set while the reader waits for an item.
        self._reader: asyncio.Future[None] | None = None
        #: Set while the producer waits for room.
        self._space: trio.Event | None = None

    async def put(self, item: T) -> None:
        """Trio side: wait while the queue is full."""
        while True:
            with self._lock:
                if len(self._items) < self._size:
                    self._items.append(item)
                    reader, self._reader = self._reader, None
                    break
                space = self._space = trio.Event()
            await space.wait()
        self._wake(reader)

    def finish(self, end: _End) -> None:
        """Trio side: the last item; never waits."""
        with self._lock:
            self._items.append(end)
            reader, self._reader = self._reader, None
        self._wake(reader)

    def _wake(self, reader: asyncio.Future[None] | None) -> None:
        if reader is not None:
            self._waker.wake(reader)

    async def get(self) -> T | _End:
        """Asyncio side: the next item."""
        while True:
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    space, self._space = self._space, None
                    break
                reader = self._reader = self._waker.loop.create_future()
            await reader
        if space is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(space.set)
        return item


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
