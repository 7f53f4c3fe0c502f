"""Who is calling: the one place the API decides the caller's identity.

Deployments record their deployer and approver from here, never from a
name the client sends: the authenticated principal of the call (the peer's
uid on the unix socket, a bearer token, a client certificate; see
docs/security.md), which the admission interceptor set for this gRPC
worker thread.
"""

from __future__ import annotations

import grpc

from conveyor.daemon.auth.identity import current_principal


def caller(context: grpc.ServicerContext) -> str:
    """The identity of the caller of ``context``'s RPC, as recorded."""
    return current_principal().identity
