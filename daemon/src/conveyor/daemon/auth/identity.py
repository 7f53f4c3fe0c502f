"""Who is calling: the authenticated principal of a call.

The API's admission interceptor authenticates every call before its
servicer runs and makes the principal the *current* one for the worker
thread that serves the call: a servicer method reads it with
:func:`current_principal` and passes it (or its ``identity``) on to the
trio side. The identity comes only from the credentials (peer uid, token,
client certificate), never from anything the client wrote in a request.
"""

from __future__ import annotations

import contextvars
import enum
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from conveyor.daemon.auth.permissions import Grants, Permission, Role, RoleName


class AuthMethod(enum.StrEnum):
    #: The peer's uid on a unix socket (SO_PEERCRED).
    UNIX = "unix"
    #: A bearer token.
    TOKEN = "token"
    #: A client certificate (mutual TLS).
    TLS = "tls"
    #: Authentication is turned off (setting ``auth = false``).
    NONE = "none"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and what it may do.

    ``repositories`` are resolved real paths of the folders SubmitRun may
    build under (an admin may build any). ``peer`` says where the call came
    from, for audit records.
    """

    identity: str
    method: AuthMethod
    roles: frozenset[Role] = frozenset()
    repositories: tuple[str, ...] = ()
    peer: str = ""
    token_id: str = ""
    grants: Grants = field(default_factory=Grants)

    @classmethod
    def create(
        cls,
        identity: str,
        method: AuthMethod,
        roles: frozenset[Role],
        *,
        repositories: tuple[str, ...] = (),
        peer: str = "",
        token_id: str = "",
        developers_cancel_any_run: bool = False,
    ) -> Principal:
        grants = Grants.of(roles, developers_cancel_any_run=developers_cancel_any_run)
        return cls(identity, method, roles, repositories, peer, token_id, grants)

    @property
    def admin(self) -> bool:
        return any(role.name is RoleName.ADMIN for role in self.roles)

    def may(self, permission: Permission, environment: str = "") -> bool:
        return self.grants.allows(permission, environment)

    @property
    def any_repository(self) -> bool:
        """Whether SubmitRun may build any repository (admins)."""
        return self.admin

    def may_build(self, real_path: str) -> bool:
        """Whether the repository at ``real_path`` (resolved: no symlink, no
        ``..``) lies in one of the caller's folders."""
        if self.any_repository:
            return True
        return any(_inside(real_path, folder) for folder in self.repositories)

    def describe(self) -> str:
        """``alice (token t_3f9a1c2b7d01)``, for messages."""
        how = f"token {self.token_id}" if self.token_id else str(self.method)
        return f"{self.identity or 'anonymous'} ({how})"


def _inside(path: str, folder: str) -> bool:
    folder = folder.rstrip("/")
    return path == folder or path.startswith(folder + "/")


#: The caller when authentication is turned off: an admin without a name.
ANONYMOUS = Principal.create("", AuthMethod.NONE, frozenset({Role(RoleName.ADMIN)}))
#: The daemon itself, for actions nobody called (automatic rollbacks).
DAEMON = Principal.create(
    "conveyord", AuthMethod.NONE, frozenset({Role(RoleName.ADMIN)}), peer=f"pid {os.getpid()}"
)

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("conveyor_principal")


def current_principal() -> Principal:
    """The caller of the call the current gRPC worker thread serves.

    Raises LookupError outside a call (a bug: the admission interceptor sets
    it for every ConveyorService call).
    """
    return _current.get()


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Make ``principal`` the current caller for the block."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)
