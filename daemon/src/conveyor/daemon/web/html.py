"""Safe HTML: text is escaped unless it is :class:`Markup` already.

Every page is built from :func:`html` templates (trusted literals written in
this package) whose arguments are escaped when they are plain strings, so a
run's reason, a stage name or a log line can never become markup. Only the
functions here (and :mod:`conveyor.daemon.web.ansi`) make :class:`Markup`
out of text.
"""

from __future__ import annotations

import html as _html
from collections.abc import Iterable
from urllib.parse import quote, urlencode

__all__ = ["Markup", "escape", "html", "join", "url"]


class Markup(str):
    """A string that is HTML already: not escaped again."""

    __slots__ = ()


def escape(value: object) -> Markup:
    """``value`` as HTML text: ``&``, ``<``, ``>``, ``"`` and ``'`` escaped,
    safe in element content and in double-quoted attribute values."""
    if isinstance(value, Markup):
        return value
    return Markup(_html.escape(str(value), quote=True))


def html(template: str, *args: object, **kwargs: object) -> Markup:
    """``template`` (a literal of this package) with ``{}`` / ``{name}``
    fields replaced by the escaped arguments. Fields take no format spec:
    format numbers before passing them."""
    return Markup(
        template.format(*(escape(a) for a in args), **{k: escape(v) for k, v in kwargs.items()})
    )


def join(parts: Iterable[object], separator: str = "") -> Markup:
    """The parts (escaped unless Markup) one after the other."""
    return Markup(escape(separator).join(escape(part) for part in parts))


def url(*segments: str, **query: object) -> str:
    """A path of this dashboard: each segment percent-encoded (a ``/`` or
    ``..`` in a stage name stays inside its segment), then the query
    parameters that are not empty."""
    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    params = {k: str(v) for k, v in query.items() if v not in ("", None)}
    return f"{path}?{urlencode(params)}" if params else path
