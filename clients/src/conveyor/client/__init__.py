"""Conveyor's Python client: a thin wrapper over the generated gRPC stubs."""

from conveyor.client.connection import ConveyorClient, Stream, connect
from conveyor.client.errors import ConveyorError, DaemonUnavailable

__all__ = ["ConveyorClient", "ConveyorError", "DaemonUnavailable", "Stream", "connect"]
