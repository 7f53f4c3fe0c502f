"""The dashboard's listener in-process: hypercorn serving the real
dashboard on 127.0.0.1, a real TCP client, the daemon's shutdown order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
import trio

from conveyor.daemon.auth.access import AccessControl
from conveyor.daemon.service import RunService
from conveyor.daemon.store.database import Database
from conveyor.daemon.web.app import Context, Route
from conveyor.daemon.web.http import Emit, Stream
from conveyor.daemon.web.server import WebListener


async def _ticks(context: Context) -> Stream:
    async def produce(emit: Emit) -> None:
        await emit(b"event: tick\ndata: 1\n\n")
        await trio.sleep_forever()

    return Stream(produce, keepalive=False)


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[WebListener]:
    db = await trio.to_thread.run_sync(Database, tmp_path / "conveyor.db")
    web = WebListener.bind("127.0.0.1:0")
    try:
        access = await AccessControl.open(db, enabled=False)
        dashboard = web.app(cast(RunService, None), access)
        dashboard.routes = [Route("GET", ("ticks",), _ticks)]
        yield web
    finally:
        web.close()
        db.close()


async def _receive_until(stream: trio.SocketStream, received: bytearray, end: bytes) -> None:
    while end not in received:
        data = await stream.receive_some(65536)
        if not data:
            return
        received += data


async def test_a_stopping_daemon_ends_each_live_stream_with_its_last_chunk(
    listener: WebListener,
) -> None:
    async with trio.open_nursery() as server:
        await server.start(listener.serve)
        client = await trio.open_tcp_stream("127.0.0.1", listener.port)
        await client.send_all(
            f"GET /ticks HTTP/1.1\r\nhost: 127.0.0.1:{listener.port}\r\n\r\n".encode()
        )
        received = bytearray()
        with trio.fail_after(10):
            await _receive_until(client, received, b"data: 1\n\n\r\n")
        assert b"transfer-encoding: chunked" in bytes(received).lower()
        # The daemon's order: stop, wait for the server to finish, then
        # cancel what is left. The stream's end is not cut off.
        listener.stop()
        await listener.stopped()
        server.cancel_scope.cancel()
    with trio.fail_after(10):
        await _receive_until(client, received, b"\r\n0\r\n\r\n")
        assert bytes(received).endswith(b"\r\n0\r\n\r\n")
        assert await client.receive_some(1) == b""  # and the connection is closed
    await client.aclose()
