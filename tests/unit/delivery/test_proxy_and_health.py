"""The front proxy in-process (forwarding, skipping an upstream that went
away, counting connections to drain, its control socket through the
daemon's controller), and the health probes the daemon decides with."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from conveyor.daemon.delivery import health
from conveyor.daemon.delivery.frontdoor import FrontProxy
from conveyor.daemon.delivery.proxy import Proxy
from conveyor.daemon.delivery.target import ProbeResult
from tests.support.ports import free_port
from tests.unit.delivery.support import until

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def http_server(
    nursery: trio.Nursery, status: int = 200, body: bytes = b"hello", hold: trio.Event | None = None
) -> int:
    """A tiny HTTP server on a free port; returns the port."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(4096)
            if hold is not None:
                await hold.wait()
            head = f"HTTP/1.0 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            await stream.send_all(head + body)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = int(listeners[0].socket.getsockname()[1])
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return port


async def fetch(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
        return data


@pytest.fixture
async def root() -> AsyncIterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="cvp-", dir="/tmp"))  # short: a unix socket lives there
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_the_proxy_forwards_skips_a_gone_upstream_and_counts_what_to_drain(
    root: Path,
) -> None:
    front = free_port()
    async with trio.open_nursery() as nursery:
        one = await http_server(nursery, body=b"one")
        hold = trio.Event()
        two = await http_server(nursery, body=b"two", hold=hold)
        proxy = Proxy(front, root / "c.sock", root / "s.json", grace=1)
        nursery.start_soon(proxy.run)
        control = FrontProxy(root, front)  # the daemon's controller, on that socket
        control.socket = root / "c.sock"

        async def serving() -> bool:
            return await control.status() is not None

        await until(serving)
        gone = free_port()  # nothing listens there: a replica that went away
        await control.set_upstreams([gone, one])
        answers = [await fetch(front) for _ in range(4)]
        assert all(a.endswith(b"one") for a in answers)

        await control.set_upstreams([two])
        result: list[bytes] = []

        async def slow() -> None:
            result.append(await fetch(front))

        nursery.start_soon(slow)
        await until(lambda: proxy.active.get(two, 0) == 1)
        assert not await control.drain(two, 0.05)  # a request in flight
        hold.set()
        assert await control.drain(two, 10)
        assert result[0].endswith(b"two")
        status = await control.status()
        assert status is not None and status.upstreams == [two]
        assert (root / "s.json").read_text() == f'{{"upstreams": [{two}]}}'

        await control.stop()

        async def stopped() -> bool:
            return await control.status() is None

        await until(stopped)
        nursery.cancel_scope.cancel()


async def test_http_probes_say_why_a_replica_is_not_healthy() -> None:
    async with trio.open_nursery() as nursery:
        ok = await http_server(nursery)
        broken = await http_server(nursery, status=503)
        assert await health.probe_http(ok, "/health", 1) == ProbeResult(True, "HTTP 200")
        assert await health.probe_http(broken, "/health", 1) == ProbeResult(False, "HTTP 503")
        assert await health.probe_http(free_port(), "/", 1) == ProbeResult(
            False, health.NOT_LISTENING
        )
        hold = trio.Event()
        silent = await http_server(nursery, hold=hold)
        assert await health.probe_http(silent, "/", 0.2) == ProbeResult(
            False, "no answer within 0.2s"
        )
        hold.set()
        nursery.cancel_scope.cancel()


async def test_a_command_probe_gets_the_port() -> None:
    ok = await health.probe_command(["sh", "-c", 'test "$PORT" = 4242'], 4242, {}, 5)
    assert ok == ProbeResult(True, "exit code 0")
    failed = await health.probe_command(["sh", "-c", "echo sick >&2; exit 3"], 1, {}, 5)
    assert failed == ProbeResult(False, "exit code 3: sick")


def scripted(results: list[str]) -> Callable[[int], Awaitable[ProbeResult]]:
    """Probe answers in order ("ok", "503", "refused"), the last repeating."""

    async def probe(port: int) -> ProbeResult:
        answer = results.pop(0) if len(results) > 1 else results[0]
        if answer == "ok":
            return ProbeResult(True, "HTTP 200")
        if answer == "refused":
            return ProbeResult(False, health.NOT_LISTENING)
        return ProbeResult(False, "HTTP 503")

    return probe


async def running() -> bool:
    return True


async def test_readiness_waits_for_a_starting_replica_and_fails_fast_on_unhealthy_answers() -> None:
    ready = await health.wait_ready(
        scripted(["refused"] * 5 + ["ok"]),
        1,
        timeout=10,
        interval=0,
        failure_threshold=2,
        alive=running,
    )
    assert ready is None
    with trio.fail_after(5):  # not the readiness timeout: 2 answers in a row
        unhealthy = await health.wait_ready(
            scripted(["503"]), 1, timeout=3600, interval=0, failure_threshold=2, alive=running
        )
    assert unhealthy is not None and "failed its health check 2 time(s)" in unhealthy.reason

    async def stopped() -> bool:
        return False

    gone = await health.wait_ready(
        scripted(["refused"]), 1, timeout=3600, interval=0, failure_threshold=2, alive=stopped
    )
    assert gone is not None and "stopped running" in gone.reason
    late = await health.wait_ready(
        scripted(["refused"]), 1, timeout=0.05, interval=0.01, failure_threshold=2, alive=running
    )
    assert late is not None and "within the readiness timeout (0.05s)" in late.reason


async def test_the_watch_window_catches_a_replica_that_turns_unhealthy() -> None:
    fine = await health.watch(
        scripted(["ok"]), [1, 2], window=0.05, interval=0.01, failure_threshold=2
    )
    assert fine is None
    turning = scripted(["ok", "ok", "ok", "503"])
    caught = await health.watch(turning, [7], window=3600, interval=0, failure_threshold=2)
    assert caught is not None and caught.port == 7
    assert "during the watch window: 2 failed health check(s) in a row: HTTP 503" in caught.reason
