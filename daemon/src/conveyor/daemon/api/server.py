"""The gRPC server: Conveyor's service, health checking and reflection,
and the listeners in front of it.

Listeners:

- **unix sockets** (``unix:///path``): with authentication on, the daemon
  listens there itself and relays each connection to gRPC's private socket
  (``$CONVEYOR_HOME/run/grpc.sock``), so each call knows its peer's uid (see
  :mod:`conveyor.daemon.auth.unix`); with it off, gRPC listens there
  directly. Either way the socket file appears with its final mode
  (``socket_mode``) and group (``socket_group``) already set.
- **TCP** (``HOST:PORT``): TLS when ``tls_cert_file`` is set (mutual TLS
  with ``tls_client_ca_file``), certificates re-read when their files
  change; plaintext otherwise, which the configuration allows only on
  loopback IPs (see :func:`conveyor.daemon.config.listener_problems`).

The server is grpcio's asyncio server, on an event loop in a thread of its
own (see :mod:`conveyor.daemon.api.loop`): streams hold no thread; unary
calls run in a pool of at most ``grpc_workers`` threads, which exit when
idle (see :mod:`conveyor.daemon.api.workers`).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import grpc.aio
import trio
from grpc_health.v1 import _async as health
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.daemon.api.admission import Admission
from conveyor.daemon.api.bridge import TrioBridge
from conveyor.daemon.api.loop import ServerLoop
from conveyor.daemon.api.reflection import enable_server_reflection
from conveyor.daemon.api.servicer import ConveyorService, WebLogin
from conveyor.daemon.api.workers import WorkerPool
from conveyor.daemon.auth.access import AccessControl
from conveyor.daemon.auth.admin import AccessAdmin
from conveyor.daemon.auth.gate import Gate
from conveyor.daemon.auth.tls import ReloadingCertificates, TlsError, TlsFiles
from conveyor.daemon.auth.unix import (
    SocketError,
    SocketRelay,
    group_id,
    parse_mode,
    private_folder,
    publish,
    staging_folder,
)
from conveyor.daemon.config import Config
from conveyor.daemon.service import RunService
from conveyor.v1 import service_pb2, service_pb2_grpc

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["ConveyorService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: gRPC's own socket when unix sockets are relayed, in the home's ``run`` folder.
PRIVATE_SOCKET = "grpc.sock"


class ListenError(Exception):
    pass


class ApiServer:
    """Owns the gRPC server and its loop. All methods but :meth:`serve_relays`
    are blocking: call them in a thread (:meth:`enter_graceful_shutdown`
    only schedules, it may be called from the trio loop)."""

    def __init__(
        self,
        config: Config,
        service: RunService,
        bridge: TrioBridge,
        access: AccessControl,
        *,
        web_login: WebLogin | None = None,
        web_url: str = "",
    ) -> None:
        self.config = config
        self.access = access
        self._executor = WorkerPool(config.grpc_workers, name="grpc")
        self.admission = Admission(
            SERVICE_NAME,
            config.max_streams,
            Gate(access) if access.enabled else None,
            executor=self._executor,
            max_calls=config.max_concurrent_rpcs,
            authenticated_reflection=config.reflection == "authenticated",
        )
        self._loop = ServerLoop()
        self.server: grpc.aio.Server = self._loop.call(self._make_server)
        service_pb2_grpc.add_ConveyorServiceServicer_to_server(
            ConveyorService(
                service, bridge, AccessAdmin(access), web_login=web_login, web_url=web_url
            ),
            self.server,
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if config.reflection != "off":
            enable_server_reflection([SERVICE_NAME, HEALTH_SERVICE], self.server)
        self.bound: list[str] = []
        #: The relays of the unix sockets (authentication on); see serve_relays.
        self.relays: list[SocketRelay] = []
        #: TLS certificates of the TCP listeners, when configured.
        self.certificates: ReloadingCertificates | None = None
        self._private: Path | None = None
        self._direct: list[Path] = []

    async def _make_server(self) -> grpc.aio.Server:
        # made on its loop: grpcio's asyncio server belongs to the loop it is made on
        return grpc.aio.server(
            migration_thread_pool=self._executor,
            interceptors=[self.admission],
            options=[
                ("grpc.max_send_message_length", 8 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )

    def start(self) -> list[str]:
        """Bind every listen address and start serving; returns the bound
        addresses. Relayed unix sockets start serving with :meth:`serve_relays`."""
        config = self.config
        try:
            mode, gid = parse_mode(config.socket_mode), group_id(config.socket_group)
        except SocketError as exc:
            raise ListenError(str(exc)) from None
        staged: list[tuple[Path, Path]] = []
        for address in config.listen_addresses:
            if address.startswith("unix://"):
                public = Path(address.removeprefix("unix://"))
                if self.access.enabled:
                    self.relays.append(
                        SocketRelay(
                            public,
                            self._private_socket(),
                            self.access.peers,
                            mode=mode,
                            gid=gid,
                            max_connections=config.max_connections,
                        )
                    )
                else:
                    spot = staging_folder(public) / "s"
                    self._add_port(f"unix://{spot}", address)
                    staged.append((spot, public))
                self.bound.append(address)
                continue
            if config.tls:
                port = self._add_port(address, address, self._tls_credentials())
            else:
                port = self._add_port(address, address)
            if port == 0:
                raise ListenError(f"cannot listen on {address}")
            if address.endswith(":0"):
                address = f"{address.rsplit(':', 1)[0]}:{port}"
            self.bound.append(address)
        self._loop.call(self.server.start)
        for spot, public in staged:
            publish(spot, public, mode, gid)
            self._direct.append(public)

        async def serving() -> None:
            for name in ("", SERVICE_NAME):
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

        self._loop.call(serving)
        return self.bound

    def _add_port(
        self, target: str, address: str, credentials: grpc.ServerCredentials | None = None
    ) -> int:

        async def add() -> int:
            if credentials is None:
                return self.server.add_insecure_port(target)
            return self.server.add_secure_port(target, credentials)

        try:
            return self._loop.call(add)
        except RuntimeError as exc:
            raise ListenError(f"cannot listen on {address}: {exc}") from None

    def _private_socket(self) -> Path:
        """gRPC's socket behind the relays, bound once (blocking)."""
        if self._private is None:
            try:
                path = private_folder(self.config.home) / PRIVATE_SOCKET
            except (OSError, SocketError) as exc:
                raise ListenError(f"cannot make the private socket folder: {exc}") from None
            path.unlink(missing_ok=True)  # left by a daemon that was killed
            self._add_port(f"unix://{path}", f"unix://{path}")
            os.chmod(path, 0o600)
            self._private = path
        return self._private

    def _tls_credentials(self) -> grpc.ServerCredentials:
        if self.certificates is None:
            config = self.config
            files = TlsFiles(
                Path(config.tls_cert_file),
                Path(config.tls_key_file),
                Path(config.tls_client_ca_file) if config.tls_client_ca_file else None,
            )
            try:
                self.certificates = ReloadingCertificates(files)
            except TlsError as exc:
                raise ListenError(f"TLS: {exc}") from None
        return self.certificates.credentials()

    async def serve_relays(self, nursery: trio.Nursery) -> None:
        """Start the relays of the unix sockets in ``nursery``; returns once
        each socket accepts connections. Cancel the nursery after
        :meth:`stop` to close them (and remove their socket files)."""
        for relay in self.relays:
            await nursery.start(relay.serve)

    def enter_graceful_shutdown(self) -> None:
        """Health says NOT_SERVING from now on (schedules it; never blocks)."""
        self._loop.soon(self.health.enter_graceful_shutdown)

    def stop(self, grace: float) -> None:
        """Stop taking calls, give calls in progress ``grace`` s, then end them."""
        self._loop.call(self.health.enter_graceful_shutdown)
        self._loop.call(lambda: self.server.stop(grace))
        self._loop.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for path in self._direct:
            path.unlink(missing_ok=True)
        if self._private is not None:
            self._private.unlink(missing_ok=True)
