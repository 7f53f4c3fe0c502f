"""The dashboard's checks before any page, in-process: the Host header,
static files, sessions from tokens and login links, CSRF and Origin, with
the daemon's real access control, token registry and audit log (a real
SQLite database); no page here reads runs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import pytest
import trio

from conveyor.daemon.auth.access import AccessControl
from conveyor.daemon.auth.admin import AccessAdmin, TokenRequest
from conveyor.daemon.auth.identity import ANONYMOUS
from conveyor.daemon.service import RunService
from conveyor.daemon.store.audit import AuditFilter
from conveyor.daemon.store.database import Database
from conveyor.daemon.web import sessions
from conveyor.daemon.web.app import Dashboard, allowed_hosts
from conveyor.daemon.web.http import Request

HOST = "127.0.0.1:7480"
ORIGIN = f"http://{HOST}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    @property
    def cookie(self) -> str:
        return self.headers.get("set-cookie", "").split(";", 1)[0]


@dataclass
class Site:
    dashboard: Dashboard
    access: AccessControl
    admin: AccessAdmin

    async def token(self, identity: str, *roles: str) -> str:
        request = TokenRequest(name=identity, identity=identity, roles=list(roles), repositories=[])
        _, secret = await self.admin.issue_token(ANONYMOUS, request)
        return secret

    async def call(
        self,
        method: str,
        path: str,
        *,
        cookie: str = "",
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        host: str = HOST,
    ) -> Answer:
        raw_path, _, query = path.partition("?")
        sent: list[dict[str, Any]] = []
        body = urlencode(form).encode() if form is not None else b""
        head = {"host": host, **(headers or {})}
        if cookie:
            head["cookie"] = cookie
        if form is not None:
            head["content-type"] = "application/x-www-form-urlencoded"
            head.setdefault("origin", ORIGIN)
        scope = {
            "type": "http",
            "method": method,
            "path": raw_path,
            "raw_path": raw_path.encode(),
            "query_string": query.encode(),
            "headers": [(k.encode(), v.encode()) for k, v in head.items()],
            "client": ("127.0.0.1", 50000),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.dashboard(scope, receive, send)
        start = sent[0]
        return Answer(
            start["status"],
            {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in sent[1:]).decode(),
        )


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    db = await trio.to_thread.run_sync(Database, tmp_path / "conveyor.db")
    try:
        access = await AccessControl.open(db, enabled=True)
        dashboard = Dashboard(
            cast(RunService, None), access, hosts=allowed_hosts("127.0.0.1", 7480), origin=ORIGIN
        )
        yield Site(dashboard, access, AccessAdmin(access))
    finally:
        db.close()


async def _signed_in(site: Site, *roles: str) -> str:
    answer = await site.call("POST", "/login", form={"token": await site.token("ann", *roles)})
    assert answer.status == 303 and answer.cookie.startswith(f"{sessions.COOKIE}=")
    return answer.cookie


async def test_requests_for_another_host_name_are_refused(site: Site) -> None:
    """A page that rebinds its own domain to 127.0.0.1 reads nothing."""
    answer = await site.call("GET", "/static/app.js", host="evil.example:7480")
    assert answer.status == 421
    for host in ("127.0.0.1:7480", "localhost:7480", "[::1]:7480"):
        assert (await site.call("GET", "/static/app.js", host=host)).status == 200


async def test_static_files_come_from_memory_by_name(site: Site) -> None:
    answer = await site.call("GET", "/static/app.js")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/javascript")
    assert "content-security-policy" in answer.headers
    cookie = await _signed_in(site, "viewer")
    for path in ("/static/..%2Fapp.py", "/static/../web/app.py", "/static/nope.css"):
        assert (await site.call("GET", path, cookie=cookie)).status == 404, path


async def test_pages_need_a_session(site: Site) -> None:
    page = await site.call("GET", "/runs/abc?status=failed")
    assert page.status == 303
    assert page.headers["location"] == "/login?next=%2Fruns%2Fabc%3Fstatus%3Dfailed"
    stream = await site.call("GET", "/live/runs", headers={"accept": "text/event-stream"})
    assert stream.status == 401
    post = await site.call("POST", "/logout", form={"csrf": "x"})
    assert post.status == 401


async def test_a_token_signs_in_and_bad_ones_are_audited(site: Site) -> None:
    cookie = await _signed_in(site, "viewer")
    assert (await site.call("GET", "/no/such/page", cookie=cookie)).status == 404
    for token, why in (("garbage", "malformed"), ("", "Paste a bearer token")):
        answer = await site.call("POST", "/login", form={"token": token})
        assert answer.status == 401 and why in answer.body and not answer.cookie
    refused = await site.access.audit.list(AuditFilter(action="WebLogin"), limit=10)
    assert [r.outcome for r in refused] == ["unauthenticated", "ok"]
    assert refused[0].peer == "web 127.0.0.1:50000" and "malformed" in refused[0].detail


async def test_signing_in_from_another_origin_is_refused(site: Site) -> None:
    token = await site.token("ann", "viewer")
    answer = await site.call(
        "POST", "/login", form={"token": token}, headers={"origin": "http://evil.example"}
    )
    assert answer.status == 403 and not answer.cookie
    for next_url, goes_to in (("/runs/x", "/runs/x"), ("//evil.example", "/"), ("http://e", "/")):
        answer = await site.call("POST", "/login", form={"token": token, "next": next_url})
        assert answer.headers["location"] == goes_to


async def test_a_revoked_token_ends_its_session_at_once(site: Site) -> None:
    cookie = await _signed_in(site, "viewer")
    record = next(r for r in site.access.tokens.all() if r.identity == "ann")
    await site.admin.revoke_token(ANONYMOUS, record.id)
    answer = await site.call("GET", "/no/such/page", cookie=cookie)
    assert answer.status == 303 and "why=expired" in answer.headers["location"]


async def test_a_token_without_a_role_may_not_read(site: Site) -> None:
    cookie = await _signed_in(site)
    answer = await site.call("GET", "/", cookie=cookie)
    assert answer.status == 403 and "may not read" in answer.body


async def test_posts_need_the_session_csrf_token_and_origin(site: Site) -> None:
    cookie = await _signed_in(site, "viewer")
    page = await site.call("GET", "/no/such/page", cookie=cookie)
    csrf = page.body.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    refused = [
        await site.call("POST", "/logout", cookie=cookie, form={"csrf": "wrong"}),
        await site.call("POST", "/logout", cookie=cookie, form={}),
        await site.call(
            "POST",
            "/logout",
            cookie=cookie,
            form={"csrf": csrf},
            headers={"origin": "http://evil.example"},
        ),
    ]
    assert [answer.status for answer in refused] == [403, 403, 403]
    denied = await site.access.audit.list(AuditFilter(action="WebLogout"), limit=10)
    assert [r.outcome for r in denied] == ["denied"] * 3
    answer = await site.call("POST", "/logout", cookie=cookie, form={"csrf": csrf})
    assert answer.status == 303 and "Max-Age=0" in answer.headers["set-cookie"]
    assert (await site.call("GET", "/no/such/page", cookie=cookie)).status == 303


async def test_a_login_link_works_once_and_expires(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    link, _ = site.dashboard.login_link(ANONYMOUS)
    path = link.removeprefix(ORIGIN)
    confirm = await site.call("GET", path)
    assert confirm.status == 200 and "<form" in confirm.body and not confirm.cookie
    first = await site.call("POST", path, form={})
    assert first.status == 303 and first.cookie
    assert (await site.call("POST", path, form={})).status == 401
    late, _ = site.dashboard.login_link(ANONYMOUS)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + sessions.LINK_LIFETIME + 1)
    answer = await site.call("POST", late.removeprefix(ORIGIN), form={})
    assert answer.status == 401 and "expired" in answer.body


async def test_without_authentication_every_visitor_gets_a_session(tmp_path: Path) -> None:
    db = await trio.to_thread.run_sync(Database, tmp_path / "conveyor.db")
    try:
        access = await AccessControl.open(db, enabled=False)
        dashboard = Dashboard(
            cast(RunService, None), access, hosts=allowed_hosts("127.0.0.1", 7480), origin=ORIGIN
        )
        site = Site(dashboard, access, AccessAdmin(access))
        answer = await site.call("GET", "/no/such/page")
        assert answer.status == 404 and answer.cookie
        assert (await site.call("GET", "/login")).headers["location"] == "/"
    finally:
        db.close()


def test_path_segments_are_decoded_one_by_one() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("not read")

    scope = {
        "method": "GET",
        "path": "/runs/x/stages/../../etc",
        "raw_path": b"/runs/x/stages/..%2F..%2Fetc/",
        "query_string": b"offset=5&offset=7",
        "headers": [(b"cookie", b"a=1"), (b"cookie", b"b=2")],
        "client": ("127.0.0.1", 1),
    }
    request = Request.from_scope(scope, receive)
    assert request.segments == ["runs", "x", "stages", "../../etc"]
    assert request.query == {"offset": "5"}
    assert request.cookies == {"a": "1", "b": "2"}
