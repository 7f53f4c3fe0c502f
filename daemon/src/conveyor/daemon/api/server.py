"""The gRPC server: Conveyor's service, health checking and reflection."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from conveyor.daemon.api.admission import Admission
from conveyor.daemon.api.bridge import TrioBridge
from conveyor.daemon.api.limits import stream_slots
from conveyor.daemon.api.reflection import enable_server_reflection
from conveyor.daemon.api.servicer import ConveyorService
from conveyor.daemon.config import Config
from conveyor.daemon.service import RunService
from conveyor.v1 import service_pb2, service_pb2_grpc

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["ConveyorService"].full_name


class ListenError(Exception):
    pass


class ApiServer:
    """Owns the grpcio server. All methods are blocking: call them in a thread."""

    def __init__(self, config: Config, service: RunService, bridge: TrioBridge) -> None:
        self.config = config
        self._executor = ThreadPoolExecutor(
            max_workers=config.grpc_workers, thread_name_prefix="grpc"
        )
        self.admission = Admission(
            SERVICE_NAME, stream_slots(config.grpc_workers, config.max_streams)
        )
        self.server = grpc.server(
            self._executor,
            interceptors=[self.admission],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            options=[
                ("grpc.max_send_message_length", 8 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        service_pb2_grpc.add_ConveyorServiceServicer_to_server(
            ConveyorService(service, bridge), self.server
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME], self.server)
        self.bound: list[str] = []

    def start(self) -> list[str]:
        """Bind every listen address and start serving; returns the bound addresses."""
        for address in self.config.listen_addresses:
            target = address
            if address.startswith("unix://"):
                path = Path(address.removeprefix("unix://"))
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if path.exists():
                    path.unlink()
            try:
                # A unix socket is made when it is bound, with the process's
                # umask: 077 then, so it is never open to others, even for
                # the moment before the chmod below.
                previous = os.umask(0o077)
                try:
                    port = self.server.add_insecure_port(target)
                finally:
                    os.umask(previous)
            except RuntimeError as exc:
                raise ListenError(f"cannot listen on {address}: {exc}") from None
            if not address.startswith("unix://") and port == 0:
                raise ListenError(f"cannot listen on {address}")
            if address.endswith(":0"):
                address = f"{address.rsplit(':', 1)[0]}:{port}"
            self.bound.append(address)
        self.server.start()
        for address in self.bound:
            if address.startswith("unix://"):
                os.chmod(address.removeprefix("unix://"), 0o600)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.bound

    def stop(self, grace: float) -> None:
        """Stop taking calls, give calls in progress ``grace`` s, then end them."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for address in self.bound:
            if address.startswith("unix://"):
                Path(address.removeprefix("unix://")).unlink(missing_ok=True)
