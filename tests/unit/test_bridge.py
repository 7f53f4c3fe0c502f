"""The trio bridge in-process: a real gRPC server (grpcio's asyncio server on
its own loop, as the daemon runs it) and channel in this process, whose
handlers call into the test's own trio loop through :class:`TrioBridge`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
import trio.testing
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from conveyor.daemon.api.admission import Admission
from conveyor.daemon.api.bridge import (
    STREAM_BUFFER,
    TrioBridge,
    _End,
    _Handoff,
    _LoopWaker,
    clip_message,
)
from conveyor.daemon.api.limits import MAX_ERROR_BYTES
from conveyor.daemon.api.loop import ServerLoop
from conveyor.daemon.api.workers import WorkerPool
from conveyor.daemon.errors import InvalidArgument, NotFound

SERVICE = "test.Bridge"


class Probe:
    """What the trio side of the handlers saw."""

    def __init__(self) -> None:
        self.cancelled = trio.Event()
        self.produced = 0
        #: set by the client once it has its answer
        self.answered = threading.Event()
        #: what a handler did after its call was aborted
        self.after_abort: list[str] = []


def _handlers(bridge: TrioBridge, probe: Probe) -> Any:
    async def echo(data: bytes) -> bytes:
        await trio.lowlevel.checkpoint()
        return data[::-1]

    async def fail(kind: bytes) -> bytes:
        if kind == b"invalid":
            raise InvalidArgument("x must be positive", field="x")
        if kind == b"huge":
            raise NotFound("no such thing: " + "\u00e9\n" * 20_000)
        raise RuntimeError("a bug")

    async def hang() -> bytes:
        try:
            await trio.sleep_forever()
        finally:
            probe.cancelled.set()
        raise AssertionError("unreachable")

    async def count(n: bytes) -> AsyncIterator[bytes]:
        for i in range(int(n)):
            probe.produced += 1
            yield str(i).encode()

    async def forever() -> AsyncIterator[bytes]:
        try:
            while True:
                probe.produced += 1
                yield b"x"
        finally:
            probe.cancelled.set()

    async def then_fail() -> AsyncIterator[bytes]:
        yield b"first"
        raise InvalidArgument("stage is required", field="stage")

    def fail_then_record(request: bytes, context: grpc.ServicerContext) -> bytes:
        # as the audit of a refused call: aborted, then recorded by the thread
        try:
            return bridge.unary(context, fail, b"invalid")
        except BaseException:
            probe.answered.wait(1.0)  # a client answered at the abort sets it at once
            probe.after_abort.append("recorded")
            raise

    def unary(fn: Callable[[bytes, grpc.ServicerContext], bytes]) -> Any:
        return grpc.unary_unary_rpc_method_handler(fn)

    def stream(agen_fn: Callable[..., AsyncIterator[bytes]], with_request: bool = False) -> Any:
        # a streaming servicer is an asynchronous generator on the server's loop
        async def relay(request: bytes, context: Any) -> AsyncIterator[bytes]:
            args = (request,) if with_request else ()
            async for item in bridge.stream(context, agen_fn, *args):
                yield item

        return grpc.unary_stream_rpc_method_handler(relay)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": unary(lambda req, ctx: bridge.unary(ctx, echo, req)),
            "Fail": unary(lambda req, ctx: bridge.unary(ctx, fail, req)),
            "Hang": unary(lambda req, ctx: bridge.unary(ctx, hang)),
            "FailThenRecord": unary(fail_then_record),
            "Count": stream(count, with_request=True),
            "Forever": stream(forever),
            "ThenFail": stream(then_fail),
        },
    )


@asynccontextmanager
async def bridged(
    tmp_path: Path, *, stream_slots: int = 8, workers: int = 16
) -> AsyncIterator[tuple[Any, Probe]]:
    """A gRPC server in this process bridged to the current trio loop, and a
    channel to it. Yields ``(call, probe)``: ``call(method, request)`` runs a
    blocking call in a thread."""
    probe = Probe()
    async with trio.open_nursery() as nursery:
        bridge = TrioBridge(trio.lowlevel.current_trio_token(), nursery)
        executor = WorkerPool(workers, name="test")
        admission = Admission(SERVICE, stream_slots, executor=executor)
        loop = ServerLoop()
        address = f"unix://{tmp_path / 'bridge.sock'}"

        async def serve() -> grpc.aio.Server:
            server = grpc.aio.server(migration_thread_pool=executor, interceptors=[admission])
            server.add_generic_rpc_handlers((_handlers(bridge, probe),))
            server.add_insecure_port(address)
            await server.start()
            return server

        server = await trio.to_thread.run_sync(loop.call, serve)
        channel = grpc.insecure_channel(address)
        try:
            yield channel, probe
        finally:
            channel.close()
            await trio.to_thread.run_sync(loop.call, lambda: server.stop(None))
            await trio.to_thread.run_sync(loop.close)
            executor.shutdown(wait=False)
            nursery.cancel_scope.cancel()


def _unary(channel: grpc.Channel, method: str) -> Callable[..., bytes]:
    call: Any = channel.unary_unary(f"/{SERVICE}/{method}", None, None)
    return call  # type: ignore[no-any-return]


def _stream(channel: grpc.Channel, method: str) -> Callable[..., Iterator[bytes]]:
    call: Any = channel.unary_stream(f"/{SERVICE}/{method}", None, None)
    return call  # type: ignore[no-any-return]


async def _error(call: Callable[[], object]) -> grpc.RpcError:
    def run() -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            call()
        return info.value

    return await trio.to_thread.run_sync(run)


async def test_a_unary_call_runs_in_the_trio_loop(tmp_path: Path) -> None:
    async with bridged(tmp_path) as (channel, _):
        echo = _unary(channel, "Echo")
        assert await trio.to_thread.run_sync(lambda: echo(b"abc", timeout=10)) == b"cba"


async def test_a_domain_error_becomes_its_status_with_the_field(tmp_path: Path) -> None:
    async with bridged(tmp_path) as (channel, _):
        err = await _error(lambda: _unary(channel, "Fail")(b"invalid", timeout=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == "x must be positive"
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
        assert status is not None
        bad = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad)
        assert [(v.field, v.description) for v in bad.field_violations] == [
            ("x", "x must be positive")
        ]


async def test_an_aborted_call_ends_once_its_thread_is_done(tmp_path: Path) -> None:
    # what the thread does after the abort (an audit record) is done before
    # the client hears: a client may read the record right after its error
    async with bridged(tmp_path) as (channel, probe):

        def call() -> list[str]:
            with pytest.raises(grpc.RpcError) as info:
                _unary(channel, "FailThenRecord")(b"", timeout=10)
            seen = list(probe.after_abort)
            probe.answered.set()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "x must be positive"
            return seen

        assert await trio.to_thread.run_sync(call) == ["recorded"]


async def test_a_bug_is_internal_and_names_the_exception(tmp_path: Path) -> None:
    async with bridged(tmp_path) as (channel, _):
        err = await _error(lambda: _unary(channel, "Fail")(b"bug", timeout=10))
        assert err.code() == grpc.StatusCode.INTERNAL
        assert err.details() == "internal error: RuntimeError: a bug"


async def test_a_huge_error_message_is_cut_instead_of_lost(tmp_path: Path) -> None:
    async with bridged(tmp_path) as (channel, _):
        err = await _error(lambda: _unary(channel, "Fail")(b"huge", timeout=10))
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
        details = err.details() or ""
        assert details.startswith("no such thing: ")
        assert "(message cut: " in details


async def test_the_deadline_of_the_call_cancels_the_trio_side(tmp_path: Path) -> None:
    async with bridged(tmp_path) as (channel, probe):
        err = await _error(lambda: _unary(channel, "Hang")(b"", timeout=0.3))
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with trio.fail_after(10):
            await probe.cancelled.wait()


async def test_a_stream_yields_every_item_in_order(tmp_path: Path) -> None:
    n = STREAM_BUFFER * 5
    async with bridged(tmp_path) as (channel, _):
        items = await trio.to_thread.run_sync(
            lambda: list(_stream(channel, "Count")(str(n).encode(), timeout=10))
        )
        assert items == [str(i).encode() for i in range(n)]


async def test_a_stream_error_after_items_keeps_its_code(tmp_path: Path) -> None:
    async with bridged(tmp_path) as (channel, _):
        received: list[bytes] = []

        def read() -> None:
            for item in _stream(channel, "ThenFail")(b"", timeout=10):
                received.append(item)

        err = await _error(read)
        assert received == [b"first"]
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == "stage is required"


async def test_a_client_leaving_a_stream_cancels_its_producer(tmp_path: Path) -> None:
    async with bridged(tmp_path) as (channel, probe):

        def read_some() -> None:
            call: Any = _stream(channel, "Forever")(b"", timeout=30)
            for _ in range(3):
                next(call)
            call.cancel()

        await trio.to_thread.run_sync(read_some)
        with trio.fail_after(10):
            await probe.cancelled.wait()
        # a slow (here: gone) client holds the producer back: to the hand-off
        # buffer plus what gRPC's own send buffer took, not without bound (an
        # unbounded producer of one-byte items would have run millions ahead)
        assert probe.produced <= 3 + STREAM_BUFFER + 256


async def test_streams_beyond_the_slots_are_refused_with_a_retry_hint(tmp_path: Path) -> None:
    async with bridged(tmp_path, stream_slots=2) as (channel, _):
        calls: list[Any] = []

        def open_two() -> None:
            for _ in range(2):
                call = _stream(channel, "Forever")(b"", timeout=30)
                next(call)
                calls.append(call)

        await trio.to_thread.run_sync(open_two)
        err = await _error(lambda: next(_stream(channel, "Forever")(b"", timeout=10)))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams" in (err.details() or "")
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
        assert status is not None
        retry = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry)
        assert retry.retry_delay.seconds >= 1
        echo = _unary(channel, "Echo")
        assert await trio.to_thread.run_sync(lambda: echo(b"ok", timeout=10)) == b"ko"
        for call in calls:
            call.cancel()

        def third() -> bytes:
            # a slot frees once its stream has ended on the server: poll
            deadline = time.monotonic() + 10
            while True:
                try:
                    return bytes(next(_stream(channel, "Count")(b"1", timeout=10)))
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    assert time.monotonic() < deadline, "the slots were never given back"
                    time.sleep(0.02)

        assert await trio.to_thread.run_sync(third) == b"0"


@asynccontextmanager
async def reader_loop() -> AsyncIterator[ServerLoop]:
    """An asyncio loop in a thread, as the server's: where a hand-off is read."""
    loop = ServerLoop()
    try:
        yield loop
    finally:
        await trio.to_thread.run_sync(loop.close)


async def test_open_streams_hold_no_worker_thread(tmp_path: Path) -> None:
    # two worker threads, twenty open streams: unary calls still answer
    async with bridged(tmp_path, stream_slots=100, workers=2) as (channel, _):
        calls: list[Any] = []

        def open_streams() -> None:
            for _ in range(20):
                call = _stream(channel, "Forever")(b"", timeout=30)
                next(call)
                calls.append(call)

        await trio.to_thread.run_sync(open_streams)
        echo = _unary(channel, "Echo")
        for _ in range(3):
            assert await trio.to_thread.run_sync(lambda: echo(b"ok", timeout=10)) == b"ko"
        for call in calls:
            call.cancel()


async def test_the_handoff_holds_at_most_its_size(tmp_path: Path) -> None:
    async with reader_loop() as reader:
        await _holds_at_most_its_size(reader)


async def _holds_at_most_its_size(reader: ServerLoop) -> None:
    handoff: _Handoff[int] = _Handoff(
        trio.lowlevel.current_trio_token(), _LoopWaker(reader.loop), 2
    )
    await handoff.put(1)
    await handoff.put(2)
    done = trio.Event()

    async def third() -> None:
        await handoff.put(3)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set(), "a full hand-off makes the producer wait"
        assert await trio.to_thread.run_sync(reader.call, handoff.get) == 1
        with trio.fail_after(10):
            await done.wait()
    handoff.finish(_End())
    items = [await trio.to_thread.run_sync(reader.call, handoff.get) for _ in range(3)]
    assert items[:2] == [2, 3] and isinstance(items[2], _End)


async def test_the_handoff_wakes_a_waiting_reader_on_finish() -> None:
    async with reader_loop() as loop:
        handoff: _Handoff[int] = _Handoff(
            trio.lowlevel.current_trio_token(), _LoopWaker(loop.loop), 2
        )
        error = ValueError("gone")
        async with trio.open_nursery() as nursery:
            result: list[object] = []

            async def reader() -> None:
                result.append(await trio.to_thread.run_sync(loop.call, handoff.get))

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            handoff.finish(_End(error))
        assert isinstance(result[0], _End) and result[0].error is error


async def test_readers_woken_together_cost_the_loop_one_wake_up() -> None:
    """An event fanned out to many streams wakes the server's loop once."""
    async with reader_loop() as loop:
        waker = _LoopWaker(loop.loop)
        wake_ups = 0
        call_soon_threadsafe = loop.loop.call_soon_threadsafe

        def counted(*args: Any) -> Any:
            nonlocal wake_ups
            wake_ups += 1
            return call_soon_threadsafe(*args)

        loop.loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
        handoffs = [_Handoff[int](trio.lowlevel.current_trio_token(), waker, 2) for _ in range(50)]

        async def read_all() -> list[object]:
            return list(await asyncio.gather(*(h.get() for h in handoffs)))

        async with trio.open_nursery() as nursery:
            got: list[object] = []

            async def reader() -> None:
                got.extend(await trio.to_thread.run_sync(loop.call, read_all))

            nursery.start_soon(reader)

            def all_waiting() -> None:  # every reader waits on the loop
                deadline = time.monotonic() + 10
                while not all(h._reader is not None for h in handoffs):
                    assert time.monotonic() < deadline, "the readers never waited"
                    time.sleep(0.01)

            await trio.to_thread.run_sync(all_waiting)
            # The loop busy (as with other streams' messages) while the
            # event reaches the 50 readers: they share one wake-up.
            entered, release = threading.Event(), threading.Event()

            def busy() -> None:
                entered.set()
                release.wait(10)

            call_soon_threadsafe(busy)
            await trio.to_thread.run_sync(entered.wait, 10)
            wake_ups = 0
            for number, handoff in enumerate(handoffs):
                await handoff.put(number)
            release.set()
        assert got == list(range(50))
        assert wake_ups == 1, f"{wake_ups} wake-ups of the loop for 50 readers"


@pytest.mark.parametrize("text", ["a" * 10_000, "\u00e9" * 10_000, "%\n" * 10_000])
def test_clip_message_keeps_the_wire_size_under_the_limit(text: str) -> None:
    clipped = clip_message(text)
    data = clipped.encode()
    wire = len(data) + 2 * sum(1 for b in data if b < 0x20 or b > 0x7E or b == 0x25)
    assert wire <= MAX_ERROR_BYTES
    assert clipped.startswith(text[:100]) and "more bytes)" in clipped
    assert clip_message("short") == "short"
