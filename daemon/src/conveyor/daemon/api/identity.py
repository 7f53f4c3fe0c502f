"""Who is calling: the one place the API decides the caller's identity.

Deployments record their deployer and approver from here, never from a
name the client sends. Today the daemon knows one kind of caller for
certain: whoever can open its unix socket, which only the daemon's user can
(mode 0600), so that caller is ``uid:<the daemon's uid>``. A loopback TCP
caller is not authenticated yet and is recorded by its address
(``tcp:127.0.0.1:PORT``). Authentication (peer credentials, tokens, mTLS)
replaces the body of :func:`caller`; nothing else changes.
"""

from __future__ import annotations

import os

import grpc


def caller(context: grpc.ServicerContext) -> str:
    """The identity of the caller of ``context``'s RPC, as recorded."""
    peer = context.peer() or ""
    if peer.startswith("unix:") or not peer:
        return f"uid:{os.getuid()}"
    kind, _, address = peer.partition(":")
    return f"tcp:{address}" if kind in ("ipv4", "ipv6") else peer
