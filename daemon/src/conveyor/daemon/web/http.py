"""The little of HTTP the dashboard needs, on ASGI: requests, responses,
streamed responses (server-sent events), and errors as status codes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, unquote

from conveyor.daemon.web.html import Markup

Scope = Mapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Bytes of a form a request may post.
MAX_FORM = 16 << 10
#: Characters of a query parameter kept (longer ones are refused).
MAX_QUERY_VALUE = 1024


class HttpError(Exception):
    """Ends a request with ``status`` and a page saying ``message``."""

    def __init__(self, status: int, message: str, *, title: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.title = title


@dataclass
class Request:
    method: str
    #: The path's segments, each percent-decoded on its own (``%2F`` stays
    #: inside its segment).
    segments: list[str]
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    #: ``ip:port`` of the browser.
    client: str
    receive: Receive
    _form: dict[str, str] | None = None

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        segments = [unquote(s, errors="replace") for s in path.split("/")[1:]]
        if segments and segments[-1] == "":
            segments.pop()  # a trailing slash
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", []):
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[name] = (
                f"{headers[name]}; {text}" if name == "cookie" and name in headers else text
            )
        query: dict[str, str] = {}
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if len(value) > MAX_QUERY_VALUE:
                raise HttpError(400, f"the query parameter {key!r} is too long")
            query.setdefault(key, value)
        cookies: dict[str, str] = {}
        try:
            jar = SimpleCookie(headers.get("cookie", ""))
            cookies = {name: morsel.value for name, morsel in jar.items()}
        except CookieError:
            pass
        host, port = scope.get("client") or ("", 0)
        return cls(
            method=scope["method"],
            segments=segments,
            path=path,
            query=query,
            headers=headers,
            cookies=cookies,
            client=f"{host}:{port}",
            receive=receive,
        )

    async def form(self) -> dict[str, str]:
        """The posted form (``application/x-www-form-urlencoded``); 413
        beyond :data:`MAX_FORM` bytes. Read once; later calls return it again."""
        if self._form is not None:
            return self._form
        kind = self.headers.get("content-type", "").split(";")[0].strip()
        if kind != "application/x-www-form-urlencoded":
            raise HttpError(415, "post the form as application/x-www-form-urlencoded")
        body = bytearray()
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "the browser went away")
            body += message.get("body", b"")
            if len(body) > MAX_FORM:
                raise HttpError(413, f"the form is larger than {MAX_FORM} bytes")
            if not message.get("more_body"):
                break
        text = body.decode("utf-8", errors="replace")
        self._form = dict(parse_qsl(text, keep_blank_values=True))
        return self._form


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def page(cls, markup: Markup, status: int = 200) -> Response:
        return cls(status, markup.encode())

    @classmethod
    def redirect(cls, location: str, status: int = 303) -> Response:
        return cls(status, b"", "text/plain", [("location", location)])


Emit = Callable[[bytes], Awaitable[None]]


@dataclass
class Stream:
    """A response whose body ``produce`` writes with the ``emit`` it is
    given, while it is sent; cancelled when the browser goes away or the
    daemon stops."""

    produce: Callable[[Emit], Awaitable[None]]
    #: Send a keep-alive comment when quiet (event streams).
    keepalive: bool = True
    status: int = 200
    content_type: str = "text/event-stream; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def sse(event: str, data: object, *, id: str | int | None = None) -> bytes:
    """One server-sent event whose data is ``data`` as JSON (one line)."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


#: A comment line: keeps a quiet stream's connection alive.
KEEPALIVE = b": keepalive\n\n"
