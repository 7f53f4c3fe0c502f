"""Roles, permissions, and the one table saying what each RPC needs.

Every ``ConveyorService`` method has a :class:`Rule` in :data:`RULES`: the
permission a caller needs, whether the call changes state (then every
attempt is audited with its outcome), which request field names the
deployment environment the permission is scoped to, and which fields name
its target in audit records. A method without a rule is refused
(PERMISSION_DENIED) and a unit test fails, so a new RPC cannot slip through
unprotected.

Roles grant permissions:

=============  ===============================================================
``viewer``     read: runs, events, logs, plugins, status, pipeline validation
``developer``  viewer, plus submit runs (of repositories under its folders)
               and cancel its own runs (any run with the access file's
               ``developers_cancel_any_run``)
``deployer``   viewer, plus deploy, promote and rollback in one environment
               (``deployer:staging``) or all (``deployer:*``)
``approver``   viewer, plus approve in one environment (``approver:production``)
               or all (``approver:*``)
``admin``      everything: tokens, the audit log, every run, environment and
               repository
=============  ===============================================================
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

SERVICE = "conveyor.v1.ConveyorService"


class Permission(enum.StrEnum):
    #: Any authenticated caller, whatever its roles.
    AUTHENTICATED = "authenticated"
    READ = "read"
    SUBMIT = "runs.submit"
    #: Cancel runs the caller submitted; others' runs need CANCEL_ANY.
    CANCEL = "runs.cancel"
    CANCEL_ANY = "runs.cancel_any"
    TOKENS = "tokens.manage"
    AUDIT = "audit.read"
    # Scoped to an environment (see Rule.environment_field):
    DEPLOY = "deploy"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    APPROVE = "approve"


#: Permissions granted per deployment environment.
SCOPED: Final = frozenset(
    {Permission.DEPLOY, Permission.PROMOTE, Permission.ROLLBACK, Permission.APPROVE}
)
#: An environment scope that covers every environment.
ANY_ENVIRONMENT: Final = "*"


class RoleName(enum.StrEnum):
    VIEWER = "viewer"
    DEVELOPER = "developer"
    DEPLOYER = "deployer"
    APPROVER = "approver"
    ADMIN = "admin"


_GRANTS: Final[Mapping[RoleName, frozenset[Permission]]] = {
    RoleName.VIEWER: frozenset({Permission.READ}),
    RoleName.DEVELOPER: frozenset({Permission.READ, Permission.SUBMIT, Permission.CANCEL}),
    RoleName.DEPLOYER: frozenset(
        {Permission.READ, Permission.DEPLOY, Permission.PROMOTE, Permission.ROLLBACK}
    ),
    RoleName.APPROVER: frozenset({Permission.READ, Permission.APPROVE}),
    RoleName.ADMIN: frozenset(Permission),
}
_ENVIRONMENT_ROLES: Final = frozenset({RoleName.DEPLOYER, RoleName.APPROVER})


@dataclass(frozen=True, order=True)
class Role:
    """A role, with its environment for ``deployer`` and ``approver``."""

    name: RoleName
    environment: str = ""

    def __str__(self) -> str:
        return f"{self.name}:{self.environment}" if self.environment else str(self.name)

    @classmethod
    def parse(cls, text: str) -> Role:
        """``viewer``, ``developer``, ``admin``, ``deployer:ENV``,
        ``approver:ENV`` (ENV a name or ``*``). Raises ValueError saying
        what is allowed."""
        name, colon, environment = text.strip().partition(":")
        known = ", ".join(str(r) for r in RoleName)
        try:
            role = RoleName(name)
        except ValueError:
            raise ValueError(f"unknown role {text!r}; the roles are {known}") from None
        if role in _ENVIRONMENT_ROLES:
            if not environment:
                raise ValueError(
                    f"role {text!r} needs an environment: {role}:ENVIRONMENT, or {role}:*"
                    " for every environment"
                )
            if not _environment_name(environment):
                raise ValueError(
                    f"role {text!r}: {environment!r} is not an environment name (letters,"
                    " digits, '.', '_' and '-', at most 100; or *)"
                )
            return cls(role, environment)
        if colon:
            raise ValueError(f"role {text!r}: only deployer and approver take an environment")
        return cls(role)


def _environment_name(text: str) -> bool:
    return text == ANY_ENVIRONMENT or (
        0 < len(text) <= 100 and all(c.isalnum() or c in "._-" for c in text) and text.isascii()
    )


def parse_roles(texts: Iterable[str]) -> frozenset[Role]:
    """Roles from their names; ValueError for the first bad one."""
    return frozenset(Role.parse(text) for text in texts)


@dataclass(frozen=True)
class Grants:
    """What a set of roles allows: unscoped permissions, and the
    environments of each scoped one."""

    permissions: frozenset[Permission] = frozenset()
    environments: Mapping[Permission, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, roles: Iterable[Role], *, developers_cancel_any_run: bool = False) -> Grants:
        permissions: set[Permission] = set()
        environments: dict[Permission, set[str]] = {}
        for role in roles:
            granted = _GRANTS[role.name]
            if role.name is RoleName.DEVELOPER and developers_cancel_any_run:
                granted = granted | {Permission.CANCEL_ANY}
            scope = ANY_ENVIRONMENT if role.name is RoleName.ADMIN else role.environment
            for permission in granted:
                if permission in SCOPED:
                    environments.setdefault(permission, set()).add(scope)
                else:
                    permissions.add(permission)
        return cls(frozenset(permissions), {p: frozenset(envs) for p, envs in environments.items()})

    def allows(self, permission: Permission, environment: str = "") -> bool:
        """Whether ``permission`` is granted (for ``environment``, when it
        is scoped; an empty environment needs the ``*`` scope)."""
        if permission is Permission.AUTHENTICATED:
            return True
        if permission in SCOPED:
            scopes = self.environments.get(permission, frozenset())
            return ANY_ENVIRONMENT in scopes or (bool(environment) and environment in scopes)
        return permission in self.permissions


@dataclass(frozen=True)
class Rule:
    """What one RPC needs and how it is audited."""

    permission: Permission
    #: The call changes state: every attempt is recorded in the audit log
    #: with its outcome (refused calls of every method are recorded anyway).
    audit: bool = False
    #: Request field holding the environment a scoped permission is
    #: checked for ("environment"); "" when the permission is not scoped.
    environment_field: str = ""
    #: Request fields naming what the call acts on, for audit records.
    target: tuple[str, ...] = ()


def method(name: str) -> str:
    """The full gRPC method name of a ConveyorService RPC."""
    return f"/{SERVICE}/{name}"


#: Each ConveyorService RPC's rule, by full method name. Approve and Reject
#: name a deployment, not an environment: the interceptor lets any reader
#: through (and audits the attempt), and the servicer checks APPROVE for the
#: deployment's environment before acting.
RULES: Final[Mapping[str, Rule]] = {
    method("SubmitRun"): Rule(
        Permission.SUBMIT, audit=True, target=("repository", "ref", "commit")
    ),
    method("GetRun"): Rule(Permission.READ),
    method("ListRuns"): Rule(Permission.READ),
    method("WatchRun"): Rule(Permission.READ),
    method("StreamLogs"): Rule(Permission.READ),
    method("CancelRun"): Rule(Permission.CANCEL, audit=True, target=("run_id",)),
    method("ValidatePipeline"): Rule(Permission.READ),
    method("ListPlugins"): Rule(Permission.READ),
    method("GetServerStatus"): Rule(Permission.READ),
    method("ListArtifacts"): Rule(Permission.READ),
    method("GetArtifact"): Rule(Permission.READ),
    method("GetSigningKey"): Rule(Permission.READ),
    method("Deploy"): Rule(
        Permission.DEPLOY, audit=True, environment_field="environment", target=("artifact",)
    ),
    method("Promote"): Rule(
        Permission.PROMOTE,
        audit=True,
        environment_field="environment",
        target=("from_environment",),
    ),
    method("Rollback"): Rule(
        Permission.ROLLBACK, audit=True, environment_field="environment", target=("to",)
    ),
    method("Approve"): Rule(Permission.READ, audit=True, target=("deployment_id",)),
    method("Reject"): Rule(Permission.READ, audit=True, target=("deployment_id",)),
    method("GetDeployment"): Rule(Permission.READ),
    method("ListDeployments"): Rule(Permission.READ),
    method("GetEnvironment"): Rule(Permission.READ),
    method("ListEnvironments"): Rule(Permission.READ),
    method("StopEnvironment"): Rule(
        Permission.DEPLOY, audit=True, environment_field="environment", target=("environment",)
    ),
    method("GetDoraMetrics"): Rule(Permission.READ),
    method("WhoAmI"): Rule(Permission.AUTHENTICATED),
    method("IssueToken"): Rule(Permission.TOKENS, audit=True, target=("name", "identity")),
    method("ListTokens"): Rule(Permission.TOKENS),
    method("RevokeToken"): Rule(Permission.TOKENS, audit=True, target=("token_id",)),
    method("ListAuditEvents"): Rule(Permission.AUDIT),
    method("CreateWebLogin"): Rule(Permission.READ, audit=True),
}
