"""The dashboard's listener: bound at start-up (before telemetry, so run
URLs can name its port), served by hypercorn's trio worker inside the
daemon's own trio run, stopped gracefully in the daemon's shutdown."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from conveyor.daemon.api.server import ListenError
from conveyor.daemon.auth.access import AccessControl
from conveyor.daemon.service import RunService
from conveyor.daemon.web.app import Dashboard, allowed_hosts

log = logging.getLogger(__name__)
#: hypercorn's own messages: warnings and errors only ("Running on ..." is
#: said by the daemon).
_hypercorn_log = logging.getLogger(f"{__name__}.hypercorn")
_hypercorn_log.setLevel(logging.WARNING)

#: Seconds requests in progress get when the daemon stops (event streams
#: are ended at once).
GRACE = 2.0


class WebListenError(ListenError):
    """``web_listen`` cannot be bound (the daemon stops, saying why)."""


@dataclass
class WebListener:
    """The dashboard's bound socket, then its server."""

    sock: socket.socket
    host: str
    port: int
    dashboard: Dashboard | None = None
    _stop: trio.Event = field(default_factory=trio.Event)
    _served: trio.Event = field(default_factory=trio.Event)

    @classmethod
    def bind(cls, address: str) -> WebListener:
        """Bind ``HOST:PORT`` (blocking; port 0 picks a free port). Raises
        :class:`WebListenError` saying why it cannot."""
        host, _, port = address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, int(port)))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise WebListenError(f"cannot listen on {address} (web_listen): {exc}") from None
        return cls(sock, host, sock.getsockname()[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the dashboard's address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.sock.close()

    def app(self, service: RunService, access: AccessControl) -> Dashboard:
        """The dashboard this listener serves, reading through ``service``."""
        self.dashboard = Dashboard(
            service,
            access,
            hosts=allowed_hosts(self.host, self.port),
            origin=self.url,
        )
        return self.dashboard

    async def serve(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve :meth:`app` until :meth:`stop`; ``task_status.started``
        once it accepts connections."""
        if self.dashboard is None:
            raise RuntimeError("make the dashboard with WebListener.app first")
        config = HypercornConfig()
        config.graceful_timeout = GRACE
        config.include_server_header = False
        config.accesslog = None
        config.errorlog = _hypercorn_log
        config.keep_alive_timeout = 30
        app = wrap_app(cast(Any, self.dashboard), config.wsgi_max_body_size, "asgi")
        try:
            await worker_serve(
                app,
                config,
                sockets=Sockets([], [self.sock], []),
                shutdown_trigger=self._stop.wait,
                task_status=task_status,
            )
        finally:
            self._served.set()

    def stop(self) -> None:
        """Stop taking connections, end the event streams, give requests in
        progress :data:`GRACE` s; :meth:`stopped` waits for that."""
        if self.dashboard is not None:
            self.dashboard.close()
        self._stop.set()

    async def stopped(self) -> None:
        """Wait until :meth:`serve` has returned after :meth:`stop`: every
        stream has sent its end and every connection is closed (at most
        :data:`GRACE` s and a second). Cancelling :meth:`serve` before that
        cuts streams off without their last chunk."""
        with trio.move_on_after(GRACE + 1.0):
            await self._served.wait()
