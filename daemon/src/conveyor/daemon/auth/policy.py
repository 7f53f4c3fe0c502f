"""The access file: identities, their roles and repository folders.

A TOML file (setting ``access_file``, default ``$CONVEYOR_HOME/access.toml``
when it exists), read at start-up and again on SIGHUP::

    # the daemon's own user and root are admins on the unix socket
    daemon_user_is_admin = true
    # developers may cancel any run, not only their own
    developers_cancel_any_run = false

    [uids]              # unix socket: uid -> identity (default: the user name)
    1001 = "alice"

    [identities.alice]  # a local user, or a client certificate's common name
    roles = ["developer"]
    repositories = ["/srv/git/team-a"]

    [identities.deploy-bot]
    roles = ["deployer:staging"]

Roles and repository folders of bearer tokens are set when the token is
issued; the file's ``developers_cancel_any_run`` applies to them too.
Everything is checked when the file is read: an unknown key or role, or a
relative folder, is an :class:`AccessFileError` naming the file and the
entry, and the previous policy stays in force.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from conveyor.daemon.auth.identity import AuthMethod, Principal
from conveyor.daemon.auth.permissions import Role, RoleName, parse_roles

#: Most folders one identity (or token) may list.
MAX_REPOSITORIES = 64
#: Most roles one identity (or token) may have.
MAX_ROLES = 32


class AccessFileError(Exception):
    """The access file cannot be used; the message says where and why."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    roles: list[str] = []
    repositories: list[str] = []


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    daemon_user_is_admin: bool = True
    developers_cancel_any_run: bool = False
    uids: dict[str, str] = {}
    identities: dict[str, _Entry] = {}


def resolve_folders(folders: list[str], what: str) -> tuple[str, ...]:
    """The real paths of absolute ``folders`` (symlinks and ``..``
    resolved; blocking). ValueError naming ``what`` for a relative one or
    too many."""
    if len(folders) > MAX_REPOSITORIES:
        raise ValueError(f"{what}: {len(folders)} folders; the limit is {MAX_REPOSITORIES}")
    resolved = []
    for folder in folders:
        if not folder.startswith("/"):
            raise ValueError(f"{what}: repository folder {folder!r} must be an absolute path")
        resolved.append(os.path.realpath(folder))
    return tuple(sorted(set(resolved)))


@dataclass(frozen=True)
class IdentityPolicy:
    roles: frozenset[Role] = frozenset()
    repositories: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeerCredentials:
    """The process at the other end of a unix socket connection."""

    pid: int
    uid: int
    gid: int
    #: The uid's user name ("" when it has none).
    user: str = ""

    def describe(self) -> str:
        return f"unix pid={self.pid} uid={self.uid}"


@dataclass(frozen=True)
class AccessPolicy:
    """Who is who on the unix socket and with certificates, and what each may do."""

    daemon_user_is_admin: bool = True
    developers_cancel_any_run: bool = False
    uids: dict[int, str] = field(default_factory=dict)
    identities: dict[str, IdentityPolicy] = field(default_factory=dict)
    #: Where it was read from (None: the defaults).
    source: Path | None = None

    def local_identity(self, peer: PeerCredentials) -> str:
        """A unix peer's identity: the ``[uids]`` entry, else its user name,
        else ``uid:N``."""
        return self.uids.get(peer.uid) or peer.user or f"uid:{peer.uid}"

    def local_principal(self, peer: PeerCredentials) -> Principal:
        identity = self.local_identity(peer)
        entry = self.identities.get(identity, IdentityPolicy())
        roles = entry.roles
        if self.daemon_user_is_admin and peer.uid in (0, os.getuid()):
            roles = roles | {Role(RoleName.ADMIN)}
        return Principal.create(
            identity,
            AuthMethod.UNIX,
            roles,
            repositories=entry.repositories,
            peer=peer.describe(),
            developers_cancel_any_run=self.developers_cancel_any_run,
        )

    def certificate_principal(self, common_name: str, peer: str) -> Principal:
        entry = self.identities.get(common_name, IdentityPolicy())
        return Principal.create(
            common_name,
            AuthMethod.TLS,
            entry.roles,
            repositories=entry.repositories,
            peer=peer,
            developers_cancel_any_run=self.developers_cancel_any_run,
        )


def load_policy(path: Path | None) -> AccessPolicy:
    """Read and check the access file (blocking: it resolves folders);
    the defaults when ``path`` is None. Raises :class:`AccessFileError`."""
    if path is None:
        return AccessPolicy()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AccessFileError(f"access file {path}: {exc}") from None
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"access file {path}: {'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
        raise AccessFileError("\n".join(problems)) from None
    uids: dict[int, str] = {}
    for key, identity in parsed.uids.items():
        if not key.isdigit():
            raise AccessFileError(f"access file {path}: uids: {key!r} is not a uid (a number)")
        if not identity.strip():
            raise AccessFileError(f"access file {path}: uids.{key}: the identity is empty")
        uids[int(key)] = identity
    identities: dict[str, IdentityPolicy] = {}
    for name, entry in parsed.identities.items():
        where = f"access file {path}: identities.{name}"
        if len(entry.roles) > MAX_ROLES:
            raise AccessFileError(f"{where}.roles: more than {MAX_ROLES} roles")
        try:
            roles = parse_roles(entry.roles)
            folders = resolve_folders(entry.repositories, "repositories")
        except ValueError as exc:
            raise AccessFileError(f"{where}: {exc}") from None
        identities[name] = IdentityPolicy(roles, folders)
    return AccessPolicy(
        daemon_user_is_admin=parsed.daemon_user_is_admin,
        developers_cancel_any_run=parsed.developers_cancel_any_run,
        uids=uids,
        identities=identities,
        source=path,
    )
