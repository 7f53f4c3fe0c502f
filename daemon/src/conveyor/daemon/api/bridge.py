"""Calls from grpcio's worker threads into the trio loop.

grpcio has no trio support, so servicers run in grpcio's thread pool. They
never touch daemon state: they hand each call to the trio loop with the
:class:`trio.lowlevel.TrioToken` captured at start-up, and translate domain
errors into gRPC status codes. A server stream is a trio task feeding a
bounded memory channel that the worker thread drains; when the client goes
away or its deadline passes, grpcio's termination callback cancels the trio
task, so nothing keeps running for a client that left.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc
import trio

from conveyor.daemon.errors import (
    ConveyorError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_CODES: list[tuple[type[ConveyorError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
]

#: Items buffered between a stream's trio task and its worker thread.
STREAM_BUFFER = 8


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            context.abort(code, str(exc))
    log.error("internal error in %s", type(exc).__name__, exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


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
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        except trio.RunFinishedError:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the daemon is shutting down")
        except ConveyorError as exc:
            _abort(context, exc)
        except grpc.RpcError:
            raise
        except Exception as exc:
            _abort(context, exc)

    def stream(
        self,
        context: grpc.ServicerContext,
        agen_fn: Callable[..., AsyncIterator[T]],
        *args: Any,
    ) -> Iterator[T]:
        """Yield the items of ``agen_fn(*args)``, produced in the trio loop.

        Cancellation: the producing task is cancelled when the client
        disconnects, its deadline passes, or the server stops.

        Resource handling: the channel holds at most :data:`STREAM_BUFFER`
        items, so a slow client slows its producer instead of growing memory.
        """
        scope = trio.CancelScope()
        send, receive = trio.open_memory_channel[T | _End](STREAM_BUFFER)

        async def produce() -> None:
            self.active_streams += 1
            try:
                with scope:
                    async with send:
                        try:
                            async for item in agen_fn(*args):
                                await send.send(item)
                        except (ConveyorError, Exception) as exc:
                            await send.send(_End(exc))
                        else:
                            await send.send(_End())
            finally:
                self.active_streams -= 1

        def stop() -> None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(scope.cancel)

        try:
            self._token.run_sync_soon(self._nursery.start_soon, produce)
        except trio.RunFinishedError:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the daemon is shutting down")
        context.add_callback(stop)
        try:
            while True:
                try:
                    item = self._run(receive.receive)
                except (trio.EndOfChannel, trio.ClosedResourceError, trio.RunFinishedError):
                    return
                if isinstance(item, _End):
                    if item.error is not None:
                        _abort(context, item.error)
                    return
                yield item
        finally:
            stop()
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(receive.close)
