"""Identity and access: who calls (peer uid, bearer token, client
certificate), what each role may do, TLS, and the audit log.

See docs/security.md for the threat model and the set-up. Inside the
daemon: :func:`current_principal` is the caller of the call a gRPC worker
thread serves; :data:`~conveyor.daemon.auth.permissions.RULES` says what
each RPC needs; :meth:`~conveyor.daemon.auth.audit.AuditLog.record` records
what no RPC records by itself.
"""

from conveyor.daemon.auth.identity import (
    ANONYMOUS,
    DAEMON,
    AuthMethod,
    Principal,
    acting_as,
    current_principal,
)
from conveyor.daemon.auth.permissions import RULES, Permission, Role, RoleName, Rule

__all__ = [
    "ANONYMOUS",
    "DAEMON",
    "RULES",
    "AuthMethod",
    "Permission",
    "Principal",
    "Role",
    "RoleName",
    "Rule",
    "acting_as",
    "current_principal",
]
