"""The dashboard as an ASGI application: who asks, may they, which page.

Every request passes the same checks, in order:

1. its ``Host`` is the address the dashboard listens on (``127.0.0.1:PORT``,
   ``localhost:PORT``...), so a web page that rebinds its own domain name to
   127.0.0.1 cannot read the dashboard (421 otherwise);
2. static files and the sign-in pages need nothing more;
3. a session (cookie): without one, a page redirects to the sign-in form
   (with authentication off, every visitor gets an anonymous admin
   session, as on the API);
4. the session's principal may ``read`` (403 otherwise);
5. a POST comes from the dashboard itself (its ``Origin``) and carries the
   session's CSRF token (403 otherwise, audited);

then the route's handler runs. Domain errors become their status (an
unknown run, stage or path is a 404 page); anything else is logged with
its traceback and answered with a plain 500 page: a browser never sees a
traceback. Every answer carries a strict Content-Security-Policy: scripts
and styles only from the dashboard's own files, no inline code.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from conveyor.daemon.auth.access import AccessControl
from conveyor.daemon.auth.audit import Outcome
from conveyor.daemon.auth.identity import Principal
from conveyor.daemon.auth.permissions import Permission
from conveyor.daemon.errors import (
    ConveyorError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from conveyor.daemon.service import RunService
from conveyor.daemon.web.html import url
from conveyor.daemon.web.http import (
    KEEPALIVE,
    HttpError,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    Stream,
)
from conveyor.daemon.web.pages.common import View
from conveyor.daemon.web.pages.login import error_page
from conveyor.daemon.web.sessions import COOKIE, LIFETIME, Session, Sessions
from conveyor.daemon.web.static import StaticFiles

log = logging.getLogger(__name__)

#: Seconds between keep-alive comments on a quiet event stream.
KEEPALIVE_INTERVAL = 15.0
#: Event streams (live pages, log tails, downloads) open at once; more get 503.
MAX_STREAMS = 256

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
]

_TITLES = {
    400: "Bad request",
    401: "Sign in",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported form",
    421: "Misdirected request",
    429: "Too many",
    500: "Internal error",
    503: "Unavailable",
}


@dataclass
class Context:
    """One request to a route, with who makes it."""

    request: Request
    principal: Principal
    session: Session
    view: View
    #: Cookies to set with the answer.
    cookies: list[str] = field(default_factory=list)


Handler = Callable[..., Awaitable[Response | Stream]]


@dataclass(frozen=True)
class Route:
    method: str
    #: Literal segments, and ``{name}`` for a parameter.
    pattern: tuple[str, ...]
    handler: Handler

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        if method != self.method and not (method == "HEAD" and self.method == "GET"):
            return None
        if len(segments) != len(self.pattern):
            return None
        params: dict[str, str] = {}
        for part, segment in zip(self.pattern, segments, strict=True):
            if part.startswith("{"):
                if not segment:
                    return None
                params[part[1:-1]] = segment
            elif part != segment:
                return None
        return params


def _status_of(exc: ConveyorError) -> int:
    if isinstance(exc, NotFound | OutOfRange):
        return 404
    if isinstance(exc, InvalidArgument):
        return 400
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, FailedPrecondition):
        return 409
    if isinstance(exc, ResourceExhausted):
        return 429
    if isinstance(exc, Unauthenticated):
        return 401
    if isinstance(exc, Unavailable):
        return 503
    return 400


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` values of requests for a dashboard on ``host:port``."""
    names = {host, f"[{host}]" if ":" in host and not host.startswith("[") else host, "localhost"}
    if host in ("127.0.0.1", "::1", "[::1]"):
        names |= {"127.0.0.1", "[::1]"}
    return frozenset(f"{name}:{port}" for name in names)


class Dashboard:
    """The ASGI application. ``routes`` come from
    :mod:`conveyor.daemon.web.routes`; ``hosts`` from :func:`allowed_hosts`."""

    def __init__(
        self,
        service: RunService,
        access: AccessControl,
        *,
        hosts: frozenset[str],
        origin: str,
    ) -> None:
        from conveyor.daemon.web import routes

        self.service = service
        self.access = access
        self.sessions = Sessions(access)
        self.static = StaticFiles()
        self.hosts = hosts
        #: ``http://127.0.0.1:PORT``: what the browser sends as ``Origin``.
        self.origin = origin
        self.routes = routes.table(self)
        #: Event streams open now.
        self.streams = 0
        self._stream_scopes: set[trio.CancelScope] = set()
        self.closing = False

    def login_link(self, principal: Principal) -> tuple[str, float]:
        """A one-time link signing its opener in as ``principal``, and when
        it expires (``conveyor web-login``; call it in the trio thread)."""
        code, expires = self.sessions.login_link(principal)
        return f"{self.origin}{url('login', code)}", expires

    def close(self) -> None:
        """End every event stream (the daemon is stopping)."""
        self.closing = True
        for scope in list(self._stream_scopes):
            scope.cancel()

    # -- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        response = await self.respond(scope, receive)
        if isinstance(response, Stream):
            await self._stream(response, send, receive)
        else:
            await self._send(response, send, head=scope["method"] == "HEAD")

    async def respond(self, scope: Scope, receive: Receive) -> Response | Stream:
        """The answer to one request (never raises)."""
        context: Context | None = None
        try:
            host = _header(scope, b"host")
            if host not in self.hosts:
                raise HttpError(
                    421,
                    f"this dashboard answers for {', '.join(sorted(self.hosts))}, not {host!r}",
                )
            request = Request.from_scope(scope, receive)
            public = await self._public(request)
            if public is not None:
                return public
            found = self._context(request)
            if isinstance(found, Response):
                return found
            context = found
            answer = await self._route(context)
        except HttpError as exc:
            status = exc.status
            answer = self._error(context, status, exc.title or _TITLES.get(status, "Error"), exc)
        except ConveyorError as exc:
            status = _status_of(exc)
            answer = self._error(context, status, _TITLES.get(status, "Error"), exc)
        except Exception:
            log.exception("dashboard: %s %s failed", scope.get("method"), scope.get("path"))
            message = "the daemon failed to answer (its log says why)"
            answer = self._error(context, 500, _TITLES[500], message)
        if context is not None:
            answer.headers.extend(("set-cookie", c) for c in context.cookies)
        return answer

    async def _route(self, context: Context) -> Response | Stream:
        request = context.request
        if request.method == "POST":
            await self._check_post(context)
        for route in self.routes:
            params = route.match(request.method, request.segments)
            if params is not None:
                return await route.handler(context, **params)
        if any(r.match("GET", request.segments) is not None for r in self.routes):
            raise HttpError(405, f"{request.method} is not allowed here")
        raise HttpError(404, f"there is no page at {request.path}")

    def _error(self, context: Context | None, status: int, title: str, message: object) -> Response:
        view = context.view if context is not None else None
        return Response.page(error_page(view, status, title, str(message)), status)

    async def _public(self, request: Request) -> Response | None:
        """Static files and signing in, which need no session."""
        segments = request.segments
        if len(segments) == 2 and segments[0] == "static":
            asset = self.static.get(segments[1])
            if asset is None or request.method not in ("GET", "HEAD"):
                raise HttpError(404, f"there is no file {segments[1]!r}")
            return Response(
                200, asset.body, asset.content_type, [("cache-control", "max-age=86400")]
            )
        if segments == ["login"]:
            from conveyor.daemon.web import routes

            return await routes.login(self, request)
        if len(segments) == 2 and segments[0] == "login":
            from conveyor.daemon.web import routes

            return await routes.login_link(self, request, segments[1])
        return None

    def _context(self, request: Request) -> Context | Response:
        peer = f"web {request.client}"
        session = self.sessions.get(request.cookies.get(COOKIE, ""))
        cookies: list[str] = []
        if session is None:
            if self.sessions.enabled:
                return self.to_login(request)
            session = self.sessions.anonymous()
            cookies.append(session_cookie(session.id))
        try:
            principal = self.sessions.principal(session, peer)
        except Unauthenticated as exc:
            return self.to_login(request, str(exc))
        view = View(
            principal=principal,
            csrf=session.csrf,
            signed_in=self.sessions.enabled,
            static=self.static.url,
        )
        if not principal.may(Permission.READ):
            roles = ", ".join(sorted(str(r) for r in principal.roles)) or "none"
            raise HttpError(
                403,
                f"{principal.describe()} may not read runs and logs: that needs the read"
                f" permission, which its roles ({roles}) do not grant",
            )
        return Context(request, principal, session, view, cookies)

    def to_login(self, request: Request, message: str = "") -> Response:
        """Where a request without a valid session goes: the sign-in form
        for a page, 401 for an event stream or a download."""
        if request.method != "GET" or request.headers.get("accept", "").startswith(
            "text/event-stream"
        ):
            raise HttpError(401, message or "sign in first")
        target = request.path + (
            "?" + "&".join(f"{k}={v}" for k, v in request.query.items()) if request.query else ""
        )
        return Response.redirect(url("login", next=target, why="expired" if message else ""))

    async def _check_post(self, context: Context) -> None:
        """A POST must come from a page of this dashboard: its Origin (sent
        by browsers with every POST) and the session's CSRF token."""
        request = context.request
        origin = request.headers.get("origin")
        form = await request.form()
        problem = ""
        if origin is not None and origin not in self.origins:
            problem = f"the form was posted from {origin}, not from this dashboard"
        elif not context.session.check_csrf(form.get("csrf", "")):
            problem = "the form's CSRF token is missing or wrong: reload the page and try again"
        if problem:
            await self.access.audit.record(
                context.principal,
                _action_of(request.segments),
                " ".join(request.segments[:2]),
                Outcome.DENIED,
                detail=f"dashboard: {problem}",
            )
            raise HttpError(403, problem)

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.hosts)

    # -- sending ---------------------------------------------------------------------

    async def _send(self, response: Response, send: Send, *, head: bool = False) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            *SECURITY_HEADERS,
            *response.headers,
        ]
        if not any(name == "cache-control" for name, _ in response.headers):
            headers.append(("cache-control", "no-store"))
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.encode(), v.encode()) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else response.body})

    async def _stream(self, stream: Stream, send: Send, receive: Receive) -> None:
        """Send a streamed answer until it ends, the browser goes away or
        the daemon stops."""
        headers = [
            ("content-type", stream.content_type),
            ("cache-control", "no-store"),
            ("x-accel-buffering", "no"),
            *SECURITY_HEADERS,
            *stream.headers,
        ]
        lock = trio.Lock()

        async def emit(data: bytes) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": data, "more_body": True})

        self.streams += 1
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": stream.status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers],
                }
            )
            async with trio.open_nursery() as nursery:
                self._stream_scopes.add(nursery.cancel_scope)
                if self.closing:
                    nursery.cancel_scope.cancel()
                try:
                    nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                    if stream.keepalive:
                        nursery.start_soon(_keepalive, emit)
                    await _produce(stream, emit)
                    nursery.cancel_scope.cancel()
                finally:
                    self._stream_scopes.discard(nursery.cancel_scope)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the browser went away while we wrote
        finally:
            self.streams -= 1

    def check_stream_room(self) -> None:
        """503 when :data:`MAX_STREAMS` streams are open already."""
        if self.streams >= MAX_STREAMS:
            raise HttpError(
                503,
                f"{MAX_STREAMS} live pages are open at once already; close some and reload",
            )


def session_cookie(session_id: str) -> str:
    return f"{COOKIE}={session_id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(LIFETIME)}"


def clear_cookie() -> str:
    return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


_ACTIONS = {"approve": "Approve", "reject": "Reject", "logout": "WebLogout"}


def _action_of(segments: list[str]) -> str:
    last = segments[-1] if segments else ""
    return _ACTIONS.get(last, re.sub(r"[^A-Za-z]", "", last.title()) or "WebPost")


async def _produce(stream: Stream, emit: Callable[[bytes], Awaitable[None]]) -> None:
    """Run a stream's producer; what goes wrong after the answer started
    (its run vanished, a bug) ends the stream and is logged."""
    try:
        await stream.produce(emit)
    except ConveyorError as exc:
        log.info("dashboard: a live stream ended: %s", exc)
    except Exception:
        log.exception("dashboard: a live stream failed")


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message: dict[str, Any] = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _keepalive(emit: Callable[[bytes], Awaitable[None]]) -> None:
    while True:
        await trio.sleep(KEEPALIVE_INTERVAL)
        await emit(KEEPALIVE)
