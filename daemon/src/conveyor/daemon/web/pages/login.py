"""Signing in, and the page of an error."""

from __future__ import annotations

from conveyor.daemon.web.html import Markup, html
from conveyor.daemon.web.pages.common import View, layout


def login_page(next_url: str, message: str = "") -> Markup:
    error = (
        html('<p class="reason" data-status="failed">{}</p>', message) if message else Markup("")
    )
    body = html(
        '<section class="login"><h1>Sign in</h1>{error}'
        '<form method="post" action="/login"><input type="hidden" name="next" value="{next}">'
        '<label>Bearer token <input type="password" name="token" autocomplete="off"'
        ' placeholder="cvt_..." autofocus required></label>'
        '<button type="submit">Sign in</button></form>'
        "<p>Use a token an admin issued you (<code>conveyor admin tokens issue</code>), or"
        " open the one-time link <code>conveyor web-login</code> prints: it signs you in"
        " as the identity the daemon knows you by on its socket.</p></section>",
        error=error,
        next=next_url,
    )
    return layout(None, "Sign in", body)


def error_page(view: View | None, status: int, title: str, message: str) -> Markup:
    body = html(
        '<section class="error"><h1>{status} {title}</h1>'
        '<p class="reason" data-status="failed">{message}</p>'
        '<p><a href="/">Back to the runs</a></p></section>',
        status=str(status),
        title=title,
        message=message,
    )
    return layout(view, title, body)
