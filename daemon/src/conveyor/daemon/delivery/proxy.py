"""An environment's front door: a small TCP proxy on its stable port.

Run as its own process (``python -m conveyor.daemon.delivery.proxy``), so
it keeps serving while the daemon restarts. It listens on
``127.0.0.1:<port>`` and forwards each connection to one of its upstreams
(replica ports on 127.0.0.1), round robin; an upstream that refuses the
connection is skipped for the next one, so a replica that just went away
costs no request. The daemon changes the upstream set through a control
socket (a unix socket only the daemon's user can use), one JSON line per
request and one per answer:

* ``{"op": "set", "upstreams": [port, ...]}``: use these from now on;
  answered once no new connection goes anywhere else;
* ``{"op": "status"}``: ``{"upstreams": [...], "active": {"port": n}, "pid": n}``,
  the connections open to each upstream (to let one drain);
* ``{"op": "stop"}``: stop listening, let open connections finish (at
  most ``--grace`` seconds), exit.

The set is also written to the state file, so a proxy started again (after
a reboot, or by a restarted daemon) serves what it served. Bounded: at
most ``--max-connections`` connections at once (more wait to be
accepted), each copy uses one buffer of 64 KiB per direction.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger("conveyor.proxy")

BUFFER = 64 * 1024
#: Longest control request, in bytes.
MAX_REQUEST = 64 * 1024


def read_state(path: Path) -> list[int]:
    """The upstreams the state file holds ([] when there is none)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    ports = data.get("upstreams", []) if isinstance(data, dict) else []
    return [p for p in ports if isinstance(p, int) and 0 < p < 65536]


def write_state(path: Path, upstreams: list[int]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"upstreams": upstreams}))
    os.replace(temporary, path)


class Proxy:
    def __init__(
        self,
        port: int,
        control: Path,
        state: Path,
        *,
        max_connections: int = 1024,
        connect_timeout: float = 2.0,
        grace: float = 10.0,
    ) -> None:
        self.port = port
        self.control = control
        self.state = state
        self.upstreams: list[int] = read_state(state)
        self.active: Counter[int] = Counter()
        self.slots = trio.Semaphore(max_connections)
        self.connect_timeout = connect_timeout
        self.grace = grace
        self._next = 0
        self._stop = trio.Event()

    # -- forwarding ----------------------------------------------------------------

    def _candidates(self) -> list[int]:
        """The upstreams in the order to try them: round robin."""
        upstreams = list(self.upstreams)
        if not upstreams:
            return []
        start = self._next % len(upstreams)
        self._next += 1
        return upstreams[start:] + upstreams[:start]

    async def _connect(self) -> tuple[int, trio.SocketStream] | None:
        for port in self._candidates():
            if port not in self.upstreams:  # taken out while we tried others
                continue
            with trio.move_on_after(self.connect_timeout):
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    continue
                return port, stream
        return None

    async def handle(self, client: trio.SocketStream) -> None:
        async with client:
            found = await self._connect()
            if found is None:
                log.warning("no upstream answered (upstreams: %s)", self.upstreams or "none")
                return
            port, upstream = found
            self.active[port] += 1
            try:
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(_pipe, client, upstream)
                    nursery.start_soon(_pipe, upstream, client)
            finally:
                self.active[port] -= 1
                if self.active[port] <= 0:
                    del self.active[port]

    async def serve_front(self, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        async with trio.open_nursery() as connections:
            task_status.started()
            async with contextlib.AsyncExitStack() as stack:
                for listener in listeners:
                    await stack.enter_async_context(listener)
                async with trio.open_nursery() as acceptors:
                    for listener in listeners:
                        acceptors.start_soon(self._accept, listener, connections)
                    await self._stop.wait()
                    acceptors.cancel_scope.cancel()
            # stopped: open connections get the grace period
            connections.cancel_scope.deadline = trio.current_time() + self.grace

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            await self.slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                self.slots.release()
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept failed (%s); retrying", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            except BaseException:
                self.slots.release()
                raise
            nursery.start_soon(self._handle_and_release, stream)

    async def _handle_and_release(self, stream: trio.SocketStream) -> None:
        try:
            await self.handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # one connection's bug never stops the proxy
            log.exception("connection failed")
        finally:
            self.slots.release()

    # -- control -------------------------------------------------------------------

    async def serve_control(self, task_status: trio.TaskStatus[None]) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            await sock.bind(str(self.control))
        finally:
            os.umask(old_umask)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while not self._stop.is_set():
                stream = await listener.accept()
                nursery.start_soon(self._control, stream)

    async def _control(self, stream: trio.SocketStream) -> None:
        async with stream:
            buffer = b""
            with trio.move_on_after(10):
                while b"\n" not in buffer and len(buffer) < MAX_REQUEST:
                    data = await stream.receive_some(4096)
                    if not data:
                        return
                    buffer += data
            try:
                request = json.loads(buffer.split(b"\n", 1)[0])
                answer = await self._answer(request)
            except (ValueError, TypeError, KeyError) as exc:
                answer = {"error": f"bad request: {exc}"}
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(json.dumps(answer).encode() + b"\n")

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "set":
            ports = [int(p) for p in request["upstreams"]]
            if any(not 0 < p < 65536 for p in ports):
                raise ValueError(f"not ports: {ports}")
            await trio.to_thread.run_sync(write_state, self.state, ports)
            self.upstreams = ports
            log.info("upstreams: %s", ports or "none")
            return {"ok": True, "upstreams": ports}
        if op == "status":
            return {
                "upstreams": self.upstreams,
                "active": {str(port): n for port, n in self.active.items()},
                "pid": os.getpid(),
                "port": self.port,
            }
        if op == "stop":
            self._stop.set()
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}")

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.serve_front)
            async with trio.open_nursery() as control:
                await control.start(self.serve_control)
                control.start_soon(self._on_signals)
                log.info("listening on 127.0.0.1:%d, upstreams %s", self.port, self.upstreams)
                await self._stop.wait()
                await trio.sleep(0.05)  # the answer to "stop" goes out first
                control.cancel_scope.cancel()
            # the front's open connections finish within the grace period
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()

    async def _on_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                self._stop.set()
                return


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError ``exc`` is, or holds (trio groups errors of nurseries)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _os_error(inner)
            if found is not None:
                return found
    return None


async def _pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    """Copy until EOF, then half-close the other side."""
    try:
        while data := await source.receive_some(BUFFER):
            await sink.send_all(data)
        with contextlib.suppress(OSError, trio.ClosedResourceError):
            await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await source.aclose()
            await sink.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--max-connections", type=int, default=1024)
    parser.add_argument("--connect-timeout", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    proxy = Proxy(
        args.port,
        args.control,
        args.state,
        max_connections=args.max_connections,
        connect_timeout=args.connect_timeout,
        grace=args.grace,
    )
    try:
        trio.run(proxy.run)
    except BaseException as exc:
        error = _os_error(exc)
        if error is None:
            raise
        print(f"conveyor proxy: cannot serve 127.0.0.1:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
