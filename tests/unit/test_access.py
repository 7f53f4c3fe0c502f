"""Credentials to principals: tokens (malformed, unknown, expired, revoked),
unix peers through the access file, certificates; the audit and token
tables as stored."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
import trio

from conveyor.daemon.auth.access import AccessControl, bearer_token
from conveyor.daemon.auth.admin import AccessAdmin, TokenRequest
from conveyor.daemon.auth.identity import ANONYMOUS, AuthMethod
from conveyor.daemon.auth.permissions import Permission
from conveyor.daemon.auth.policy import AccessFileError, PeerCredentials, load_policy
from conveyor.daemon.auth.tokens import TokenRecord, TokenRegistry, digest, new_token
from conveyor.daemon.errors import InvalidArgument, Unauthenticated
from conveyor.daemon.store import Database
from conveyor.daemon.store.audit import AuditFilter, AuditRecord, AuditStore


def _record(secret: str, token_id: str, **changes: object) -> TokenRecord:
    fields: dict[str, object] = {
        "id": token_id,
        "name": "ci",
        "identity": "ci-bot",
        "roles": ("viewer",),
        "repositories": (),
        "digest": digest(secret),
        "created_at": time.time(),
        "created_by": "root",
        "expires_at": time.time() + 60,
        **changes,
    }
    return TokenRecord(**fields)  # type: ignore[arg-type]


def test_a_token_is_checked_by_its_digest_and_says_why_it_is_refused() -> None:
    token_id, secret = new_token()
    registry = TokenRegistry([_record(secret, token_id)])
    assert registry.check(secret).identity == "ci-bot"
    with pytest.raises(Unauthenticated, match="malformed"):
        registry.check("hunter2")
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthenticated, match="not valid: no such token"):
        registry.check(forged)
    _, other = new_token()
    with pytest.raises(Unauthenticated, match="no such token"):
        registry.check(other)
    with pytest.raises(Unauthenticated, match="expired at") as expired:
        registry.check(secret, now=time.time() + 3600)
    assert expired.value.token_id == token_id
    registry.put(_record(secret, token_id, revoked_at=time.time(), revoked_by="admin"))
    with pytest.raises(Unauthenticated, match=r"was revoked at .* by admin"):
        registry.check(secret)


def test_tokens_are_256_random_bits_and_only_their_digest_is_kept() -> None:
    token_id, secret = new_token()
    prefix = "cvt_" + token_id.removeprefix("t_") + "_"
    assert secret.startswith(prefix)
    assert len(secret.removeprefix(prefix)) == 43  # 32 bytes, base64url
    record = _record(secret, token_id)
    assert secret not in repr(record)


@pytest.mark.parametrize(
    ("header", "error"),
    [("Basic abc", "must read `Bearer <token>`"), ("Bearer ", "must read")],
)
def test_a_bad_authorization_header_is_refused(header: str, error: str) -> None:
    with pytest.raises(Unauthenticated, match=error):
        bearer_token([("authorization", header)])


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token([("authorization", "bearer cvt_x")]) == "cvt_x"
    assert bearer_token([("x-other", "1")]) is None


def _access_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "access.toml"
    path.write_text(text)
    return path


def test_the_access_file_maps_uids_and_gives_roles_and_folders(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    repos.mkdir()
    policy = load_policy(
        _access_file(
            tmp_path,
            f"""
[uids]
4242 = "alice"

[identities.alice]
roles = ["developer"]
repositories = ["{repos}/../repos"]

[identities.deploy-bot]
roles = ["deployer:staging"]
""",
        )
    )
    alice = policy.local_principal(PeerCredentials(pid=1, uid=4242, gid=4242, user="al"))
    assert (alice.identity, alice.method) == ("alice", AuthMethod.UNIX)
    assert alice.may(Permission.SUBMIT) and not alice.may(Permission.TOKENS)
    assert alice.repositories == (str(repos.resolve()),), "folders are resolved"
    bob = policy.local_principal(PeerCredentials(pid=1, uid=5000, gid=5000, user="bob"))
    assert bob.identity == "bob" and not bob.roles
    nameless = policy.local_principal(PeerCredentials(pid=1, uid=5001, gid=5001))
    assert nameless.identity == "uid:5001"
    owner = policy.local_principal(PeerCredentials(pid=1, uid=os.getuid(), gid=0, user="me"))
    assert owner.admin, "the daemon's own user is an admin by default"
    bot = policy.certificate_principal("deploy-bot", "ipv4:127.0.0.1:5")
    assert bot.may(Permission.DEPLOY, "staging") and not bot.may(Permission.DEPLOY, "prod")


def test_the_daemon_user_need_not_be_admin(tmp_path: Path) -> None:
    policy = load_policy(_access_file(tmp_path, "daemon_user_is_admin = false\n"))
    owner = policy.local_principal(PeerCredentials(pid=1, uid=os.getuid(), gid=0, user="me"))
    assert not owner.roles


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("daemon_user_is_admn = true\n", "daemon_user_is_admn"),
        ('[identities.a]\nroles = ["root"]\n', "identities.a: unknown role 'root'"),
        ('[identities.a]\nrepositories = ["srv/git"]\n', "must be an absolute path"),
        ('[uids]\nalice = "alice"\n', "'alice' is not a uid"),
        ("daemon_user_is_admin = 1\n", "daemon_user_is_admin"),
        ("[[broken", "access file"),
    ],
)
def test_a_mistake_in_the_access_file_is_an_error_naming_it(
    tmp_path: Path, text: str, error: str
) -> None:
    with pytest.raises(AccessFileError, match=error):
        load_policy(_access_file(tmp_path, text))


async def _access(tmp_path: Path, enabled: bool = True) -> tuple[Database, AccessControl]:
    db = await trio.to_thread.run_sync(Database, tmp_path / "conveyor.db")
    access = await AccessControl.open(db, enabled=enabled)
    return db, access


async def test_issued_tokens_authenticate_and_revoked_ones_stop_at_once(tmp_path: Path) -> None:
    db, access = await _access(tmp_path)
    try:
        admin = AccessAdmin(access)
        repos = tmp_path / "repos"
        repos.mkdir()
        record, secret = await admin.issue_token(
            ANONYMOUS, TokenRequest("ci", "ci-bot", ["developer"], [str(repos)])
        )
        caller = access.authenticate([("authorization", f"Bearer {secret}")], "ipv4:x", dict)
        assert (caller.identity, caller.token_id) == ("ci-bot", record.id)
        assert caller.may(Permission.SUBMIT)
        stored = sqlite3.connect(tmp_path / "conveyor.db").execute("SELECT digest FROM api_tokens")
        assert [row[0] for row in stored] == [digest(secret)], "the digest, not the secret"
        await admin.revoke_token(ANONYMOUS, record.id)
        with pytest.raises(Unauthenticated, match="revoked"):
            access.authenticate([("authorization", f"Bearer {secret}")], "ipv4:x", dict)
        with pytest.raises(Unauthenticated, match="no credentials"):
            access.authenticate([], "ipv4:127.0.0.1:1", dict)
        # a restart reads the tokens back
        again = await AccessControl.open(db, enabled=True)
        assert again.tokens.get(record.id) is not None
    finally:
        db.close()


async def test_a_developer_token_needs_folders_and_roles_must_exist(tmp_path: Path) -> None:
    db, access = await _access(tmp_path)
    try:
        admin = AccessAdmin(access)
        with pytest.raises(InvalidArgument, match="developer token needs the folders") as err:
            await admin.issue_token(ANONYMOUS, TokenRequest("ci", "bot", ["developer"], []))
        assert err.value.field == "repositories"
        with pytest.raises(InvalidArgument, match="unknown role"):
            await admin.issue_token(ANONYMOUS, TokenRequest("ci", "bot", ["owner"], []))
        with pytest.raises(InvalidArgument, match="expires_in_seconds"):
            await admin.issue_token(ANONYMOUS, TokenRequest("ci", "bot", ["viewer"], [], 10**12))
    finally:
        db.close()


async def test_with_auth_off_every_caller_is_an_anonymous_admin(tmp_path: Path) -> None:
    db, access = await _access(tmp_path, enabled=False)
    try:
        assert access.authenticate([], "ipv4:127.0.0.1:1", dict) is ANONYMOUS
    finally:
        db.close()


async def test_audit_records_cannot_be_changed_or_deleted(tmp_path: Path) -> None:
    db = await trio.to_thread.run_sync(Database, tmp_path / "conveyor.db")
    try:
        store = AuditStore(db)
        for n in range(3):
            await store.append(
                AuditRecord(
                    time=1000.0 + n,
                    identity=f"user{n % 2}",
                    auth_method="token",
                    action="SubmitRun",
                    target=f"repository /r{n}",
                    outcome="ok",
                    code="OK",
                )
            )
        newest = await store.list(AuditFilter(), limit=2)
        assert [r.target for r in newest] == ["repository /r2", "repository /r1"]
        older = await store.list(AuditFilter(), limit=5, before_seq=newest[-1].seq)
        assert [r.target for r in older] == ["repository /r0"]
        only = await store.list(AuditFilter(identity="user1"), limit=5)
        assert [r.target for r in only] == ["repository /r1"]
        since = await store.list(AuditFilter(since=1001.5), limit=5)
        assert [r.target for r in since] == ["repository /r2"]
        for statement in ("UPDATE audit_events SET outcome = 'ok'", "DELETE FROM audit_events"):

            def tamper(conn: sqlite3.Connection, sql: str = statement) -> None:
                conn.execute(sql)

            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                await db.write(tamper)
        assert len(await store.list(AuditFilter(), limit=10)) == 3
    finally:
        db.close()
