"""Where the daemon listens by default, shared by `conveyor` and `conveyord`.

The default is a unix socket in the Conveyor home folder (``$CONVEYOR_HOME``,
default ``~/.conveyor``), readable only by its owner. ``CONVEYOR_ADDRESS``
overrides it for clients; any gRPC target works (``unix:///path``,
``127.0.0.1:7474``).

A TCP address is *loopback* only when its host is an IP literal in
127.0.0.0/8 or ``::1``: a host name (``localhost``, ``127.example.com``) may
resolve anywhere. Clients use TLS by default for other TCP addresses.
"""

from __future__ import annotations

import ipaddress
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


def is_loopback_address(host: str) -> bool:
    """Whether ``host`` (``127.0.0.1``, ``[::1]``, ``::1``) is an IP literal
    in 127.0.0.0/8 or ``::1``; a host name never is."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def is_unix_address(address: str) -> bool:
    return address.startswith("unix:")


def address_host(address: str) -> str:
    """The host of a ``HOST:PORT`` or ``dns:///HOST:PORT`` target ("" for unix sockets)."""
    if is_unix_address(address):
        return ""
    target = address.split("///", 1)[-1] if "///" in address else address
    host, _, port = target.rpartition(":")
    return host if port.isdigit() else target


def needs_tls_by_default(address: str) -> bool:
    """Whether a client should use TLS for ``address`` when nothing says:
    for every TCP address that is not a loopback IP."""
    return not is_unix_address(address) and not is_loopback_address(address_host(address))
