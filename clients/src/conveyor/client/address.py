"""Where the daemon listens by default, shared by `conveyor` and `conveyord`.

The default is a unix socket in the Conveyor home folder (``$CONVEYOR_HOME``,
default ``~/.conveyor``), readable only by its owner. ``CONVEYOR_ADDRESS``
overrides it for clients; any gRPC target works (``unix:///path``,
``127.0.0.1:7474``).
"""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_NAME = "conveyord.sock"


def conveyor_home() -> Path:
    """The folder holding the daemon's socket, database and logs."""
    return Path(os.environ.get("CONVEYOR_HOME") or Path.home() / ".conveyor").absolute()


def default_socket_path() -> Path:
    return conveyor_home() / SOCKET_NAME


def default_address() -> str:
    """The gRPC target a client uses when none is given."""
    return os.environ.get("CONVEYOR_ADDRESS") or f"unix://{default_socket_path()}"
