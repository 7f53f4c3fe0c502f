"""What every page shares: the layout, times, durations, status badges."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from conveyor.client.render import format_duration
from conveyor.daemon.auth.identity import Principal
from conveyor.daemon.web.html import Markup, escape, html, join, url

__all__ = [
    "View",
    "badge",
    "duration",
    "empty",
    "layout",
    "moment",
    "short",
]


@dataclass(frozen=True)
class View:
    """Who looks at a page, and what its forms need."""

    principal: Principal
    #: The session's CSRF token, for forms that post.
    csrf: str
    #: Whether people sign in (authentication is on): a page shows who is
    #: signed in and a sign-out button.
    signed_in: bool
    #: The URL of a static asset, with its version.
    static: Callable[[str], str]


NAV = (("Runs", "/"), ("Artifacts", "/artifacts"), ("Environments", "/environments"))


def layout(view: View | None, title: str, body: Markup, *, section: str = "") -> Markup:
    """A whole page: head, navigation, ``body``."""
    static = view.static if view is not None else (lambda name: f"/static/{name}")
    links = join(
        html(
            '<a href="{}"{}>{}</a>', href, Markup(' class="here"') if name == section else "", name
        )
        for name, href in (*NAV, ("Server", "/server"))
    )
    who = Markup("")
    if view is not None and view.signed_in:
        who = html(
            '<form class="who" method="post" action="/logout">'
            '<span title="{}">{}</span> <input type="hidden" name="csrf" value="{}">'
            '<button type="submit">Sign out</button></form>',
            ", ".join(sorted(str(role) for role in view.principal.roles)) or "no roles",
            view.principal.identity or "anonymous",
            view.csrf,
        )
    return html(
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{title} · Conveyor</title>"
        '<link rel="stylesheet" href="{css}"><link rel="stylesheet" href="{ansi}">'
        '<link rel="icon" href="{icon}">'
        '<script src="{js}" defer></script></head>'
        '<body><header><a class="brand" href="/">Conveyor</a><nav>{links}</nav>{who}</header>'
        "<main>{body}</main></body></html>\n",
        title=title,
        css=static("app.css"),
        ansi=static("ansi.css"),
        icon=static("favicon.svg"),
        js=static("app.js"),
        links=links,
        who=who,
        body=body,
    )


def moment(seconds: float | None) -> Markup:
    """A point in time (UTC; the page's script shows it in local time)."""
    if seconds is None:
        return Markup('<span class="muted">-</span>')
    when = datetime.fromtimestamp(seconds, UTC)
    return html(
        '<time datetime="{}">{}</time>',
        when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        when.strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


def duration(started: float | None, finished: float | None, *, now: float | None = None) -> str:
    """How long from ``started`` to ``finished`` (or now); "-" before it starts."""
    if started is None:
        return "-"
    end = finished if finished is not None else (now if now is not None else time.time())
    return format_duration(max(0.0, end - started))


def badge(status: str) -> Markup:
    """A status in its colour."""
    return html('<span class="badge" data-status="{}">{}</span>', status, status.replace("_", " "))


def short(commit: str, length: int = 12) -> Markup:
    """A commit or digest shortened, the whole in its tooltip."""
    if len(commit) <= length:
        return escape(commit)
    return html('<span class="mono" title="{}">{}</span>', commit, commit[:length])


def empty(text: str, columns: int) -> Markup:
    return html('<tr class="empty"><td colspan="{}">{}</td></tr>', str(columns), text)


def filters(action: str, fields: Iterable[Markup]) -> Markup:
    """A GET form of filters."""
    return html(
        '<form class="filters" method="get" action="{}">{}'
        '<button type="submit">Filter</button> <a href="{}">clear</a></form>',
        action,
        join(fields),
        action,
    )


def text_field(name: str, label: str, value: str, placeholder: str = "") -> Markup:
    return html(
        '<label>{} <input type="text" name="{}" value="{}" placeholder="{}"></label>',
        label,
        name,
        value,
        placeholder,
    )


def select_field(name: str, label: str, value: str, choices: Iterable[str]) -> Markup:
    options = join(
        html(
            '<option value="{}"{}>{}</option>',
            c,
            Markup(" selected") if c == value else "",
            c or "any",
        )
        for c in ("", *choices)
    )
    return html('<label>{} <select name="{}">{}</select></label>', label, name, options)


def link(text: object, *segments: str, **query: object) -> Markup:
    return html('<a href="{}">{}</a>', url(*segments, **query), text)
