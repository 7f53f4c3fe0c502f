"""The API server's thread: an asyncio event loop running grpcio's asyncio server.

grpcio serves asyncio, not trio, so the server gets an event loop in a
thread of its own (:class:`ServerLoop`). What each call costs there:

- an open stream (``WatchRun``, ``StreamLogs``, health ``Watch``,
  reflection) is a task on that loop, fed by a task in the trio loop (see
  :meth:`conveyor.daemon.api.bridge.TrioBridge.stream`): memory, no thread,
  so a thousand followers do not hold a thousand threads;
- a unary call runs in a worker thread of the server's pool, because its
  servicer and the admission checks wait (for the trio loop, for an audit
  record to be stored). It sees its call through a :class:`ThreadContext`:
  the synchronous ``grpc.ServicerContext`` API, whose ``abort`` raises, as
  in grpcio's thread-pool server; the call ends with that status once the
  thread is done with it (:func:`in_worker`), so what the thread does
  after an abort (the audit record of a refusal) is done before the
  client hears of it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, NoReturn, TypeVar

import grpc

T = TypeVar("T")

#: Metadata as grpcio's stubs type it.
Metadata = Sequence[tuple[str, str | bytes]]
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServerLoop:
    """An asyncio event loop in a daemon thread of its own.

    Resource handling: :meth:`close` stops the loop and joins the thread;
    call it once what runs on the loop has ended (the server stopped).
    """

    def __init__(self, name: str = "grpc-aio") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, afn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``afn()`` on the loop and wait for its result (blocking: never
        call it from the loop's own thread)."""

        async def run() -> T:
            return await afn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def soon(self, afn: Callable[[], Awaitable[Any]]) -> None:
        """Start ``afn()`` on the loop without waiting for it; runs in the
        order asked, before anything :meth:`call` asks later."""

        async def run() -> None:
            await afn()

        asyncio.run_coroutine_threadsafe(run(), self.loop)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Aborted(Exception):
    """Raised in a worker thread by :meth:`ThreadContext.abort`: the call
    ends with this status when the thread returns (see :func:`in_worker`)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Metadata) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailing_metadata = tuple(trailing_metadata)


async def in_worker(
    executor: Executor,
    fn: Callable[[Any, grpc.ServicerContext], T],
    request: Any,
    context: grpc.aio.ServicerContext[Any, Any],
) -> T:
    """``fn(request, view)`` in a worker thread of ``executor``, ``view``
    being a :class:`ThreadContext` of ``context``; on the server's loop.
    A call ``fn`` aborted ends with its status once ``fn`` has returned:
    raises grpcio's abort error, which the caller lets through."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(executor, fn, request, ThreadContext(context, loop))
    except Aborted as aborted:
        # readable on the context afterwards too (the audit record of a stream)
        context.set_code(aborted.code)
        context.set_details(aborted.details)
        await context.abort(aborted.code, aborted.details, aborted.trailing_metadata)
        raise AssertionError("unreachable: abort raises") from aborted


class ThreadContext(grpc.ServicerContext):
    """The context of a call on grpcio's asyncio server, as a worker thread
    uses it: the synchronous ``grpc.ServicerContext`` API.

    :meth:`abort` raises :class:`Aborted`, which :func:`in_worker` turns
    into the end of the call once the thread is done. :meth:`code` and
    :meth:`details` say what the call was aborted with (None before).
    """

    def __init__(
        self, context: grpc.aio.ServicerContext[Any, Any], loop: asyncio.AbstractEventLoop
    ):
        self._context = context
        self._loop = loop
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()
    ) -> NoReturn:
        self._code, self._details = code, details
        raise Aborted(code, details, trailing_metadata)

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self.abort(status.code, status.details, status.trailing_metadata)

    def code(self) -> grpc.StatusCode | None:
        """What the call was aborted with, here or on the loop (None: not)."""
        if self._code is not None:
            return self._code
        raw: Any = self._context.code()  # grpcio's own enum: its number
        code = _CODES.get(int(raw or 0))
        return None if code is grpc.StatusCode.OK else code

    def details(self) -> str:
        return self._details or str(self._context.details() or "")

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return str(self._context.peer())

    def peer_identities(self) -> Any:
        return self._context.peer_identities()

    def peer_identity_key(self) -> str | None:
        return self._context.peer_identity_key()

    def auth_context(self) -> Mapping[str, Any]:
        return dict(self._context.auth_context())

    def time_remaining(self) -> float | None:  # type: ignore[override]
        return self._context.time_remaining()

    def is_active(self) -> bool:
        return self.code() is None

    def cancel(self) -> None:
        raise NotImplementedError("a servicer cannot cancel its own call; abort it")

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False  # a unary call's end needs no callback here

    def set_code(self, code: grpc.StatusCode) -> None:
        self._context.set_code(code)

    def set_details(self, details: str) -> None:
        self._context.set_details(details)

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self._context.set_trailing_metadata(tuple(trailing_metadata))

    def send_initial_metadata(self, initial_metadata: Metadata) -> None:
        asyncio.run_coroutine_threadsafe(
            self._context.send_initial_metadata(tuple(initial_metadata)), self._loop
        ).result()

    def set_compression(self, compression: grpc.Compression) -> None:
        self._context.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self._context.disable_next_message_compression()
