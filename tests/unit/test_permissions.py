"""One table decides what each RPC needs; roles grant permissions; a
caller builds only repositories under its folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conveyor.daemon.auth.identity import AuthMethod, Principal
from conveyor.daemon.auth.permissions import (
    RULES,
    SCOPED,
    Grants,
    Permission,
    Role,
    RoleName,
    method,
    parse_roles,
)
from conveyor.daemon.auth.repositories import allowed_repository
from conveyor.daemon.errors import PermissionDenied
from conveyor.v1 import service_pb2


def _service_methods() -> set[str]:
    service = service_pb2.DESCRIPTOR.services_by_name["ConveyorService"]
    return {method(m.name) for m in service.methods}


def test_every_rpc_has_a_permission_rule() -> None:
    missing = _service_methods() - set(RULES)
    assert not missing, f"RPCs without a rule in auth/permissions.py RULES: {sorted(missing)}"


def test_every_rule_names_an_rpc() -> None:
    stale = set(RULES) - _service_methods()
    assert not stale, f"rules for RPCs that do not exist: {sorted(stale)}"


def test_state_changing_rpcs_are_audited_and_reads_are_not() -> None:
    audited = {name.rsplit("/", 1)[1] for name, rule in RULES.items() if rule.audit}
    assert audited == {
        "SubmitRun",
        "CancelRun",
        "IssueToken",
        "RevokeToken",
        "CreateWebLogin",  # a one-time sign-in link is a credential
        "Deploy",
        "Promote",
        "Rollback",
        "Approve",
        "Reject",
        "StopEnvironment",
    }


def test_scoped_permissions_name_their_environment_field() -> None:
    for name, rule in RULES.items():
        assert (rule.permission in SCOPED) == bool(rule.environment_field), name


def test_rule_targets_are_fields_of_the_request() -> None:
    service = service_pb2.DESCRIPTOR.services_by_name["ConveyorService"]
    for m in service.methods:
        rule = RULES[method(m.name)]
        fields = {f.name for f in m.input_type.fields}
        assert set(rule.target) <= fields, m.name
        assert not rule.environment_field or rule.environment_field in fields, m.name


def _grants(*roles: str, cancel_any: bool = False) -> Grants:
    return Grants.of(parse_roles(roles), developers_cancel_any_run=cancel_any)


@pytest.mark.parametrize(
    ("role", "allowed", "denied"),
    [
        ("viewer", {Permission.READ}, {Permission.SUBMIT, Permission.CANCEL, Permission.TOKENS}),
        (
            "developer",
            {Permission.READ, Permission.SUBMIT, Permission.CANCEL},
            {Permission.CANCEL_ANY, Permission.TOKENS, Permission.AUDIT},
        ),
        ("admin", set(Permission), set()),
    ],
)
def test_roles_grant_their_permissions(
    role: str, allowed: set[Permission], denied: set[Permission]
) -> None:
    grants = _grants(role)
    for permission in allowed:
        assert grants.allows(permission, "production"), permission
    for permission in denied:
        assert not grants.allows(permission, "production"), permission


def test_developers_cancel_any_run_only_when_configured() -> None:
    assert not _grants("developer").allows(Permission.CANCEL_ANY)
    assert _grants("developer", cancel_any=True).allows(Permission.CANCEL_ANY)


def test_deployer_and_approver_are_scoped_to_their_environment() -> None:
    staging = _grants("deployer:staging", "approver:production")
    assert staging.allows(Permission.DEPLOY, "staging")
    assert staging.allows(Permission.ROLLBACK, "staging")
    assert not staging.allows(Permission.DEPLOY, "production"), "a developer deploying to prod"
    assert not staging.allows(Permission.DEPLOY, ""), "no environment needs the * scope"
    assert staging.allows(Permission.APPROVE, "production")
    assert not staging.allows(Permission.APPROVE, "staging")
    everywhere = _grants("deployer:*")
    assert everywhere.allows(Permission.PROMOTE, "production")
    assert not _grants("developer").allows(Permission.DEPLOY, "production")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("owner", "unknown role 'owner'"),
        ("deployer", "needs an environment"),
        ("viewer:staging", "only deployer and approver take an environment"),
        ("deployer:prod env", "is not an environment name"),
    ],
)
def test_bad_roles_say_what_is_allowed(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Role.parse(text)


def test_roles_print_as_they_parse() -> None:
    assert str(Role.parse("deployer:staging")) == "deployer:staging"
    assert Role.parse("admin") == Role(RoleName.ADMIN)


def _developer(*folders: Path) -> Principal:
    return Principal.create(
        "dev",
        AuthMethod.TOKEN,
        parse_roles(["developer"]),
        repositories=tuple(os.path.realpath(f) for f in folders),
    )


def test_a_repository_must_lie_under_a_folder_after_resolving(tmp_path: Path) -> None:
    allowed = tmp_path / "team"
    inside = allowed / "app"
    inside.mkdir(parents=True)
    outside = tmp_path / "other" / "secret"
    outside.mkdir(parents=True)
    (allowed / "link").symlink_to(outside)
    sibling = tmp_path / "team-b"
    sibling.mkdir()
    dev = _developer(allowed)
    assert allowed_repository(dev, inside) == inside.resolve()
    for escape in (outside, allowed / "link", allowed / ".." / "other" / "secret", sibling):
        with pytest.raises(PermissionDenied) as err:
            allowed_repository(dev, escape)
        assert err.value.field == "repository"
        assert str(allowed.resolve()) in str(err.value), "the message names the folders"


def test_without_folders_nothing_may_be_built_but_admins_build_anything(tmp_path: Path) -> None:
    with pytest.raises(PermissionDenied, match="has no repository folders"):
        allowed_repository(_developer(), tmp_path)
    admin = Principal.create("root", AuthMethod.UNIX, parse_roles(["admin"]))
    assert allowed_repository(admin, tmp_path / "x") == tmp_path / "x"
