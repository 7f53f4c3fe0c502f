"""What the identity and access commands read and print: durations and
times on the command line, tokens, audit records, who you are."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import datetime

from conveyor.client.render import format_time, table, ts_seconds
from conveyor.client.terminal import printable
from conveyor.v1 import audit_pb2, auth_pb2

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw]?)")


def parse_duration(text: str) -> int:
    """Seconds in ``90d``, ``12h``, ``30m``, ``45s``, ``2w`` or a plain
    number of seconds. ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"expected a duration such as 90d, 12h, 30m or 3600, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_since(text: str, now: float | None = None) -> float:
    """A point in time: a duration ago (``1h``, ``7d``) or an ISO 8601 time
    (``2025-06-01``, ``2025-06-01T12:00:00+00:00``; local time without a
    zone). ValueError otherwise."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"expected a duration ago (1h, 7d) or a date and time (2025-06-01T12:00), got {text!r}"
        ) from None


def token_status(token: auth_pb2.ApiToken, now: float | None = None) -> str:
    now = time.time() if now is None else now
    if token.HasField("revoked_at"):
        return "revoked"
    expires = ts_seconds(token.expires_at)
    return "expired" if expires is not None and expires <= now else "active"


def tokens_table(tokens: Sequence[auth_pb2.ApiToken], now: float | None = None) -> list[str]:
    rows = [
        [
            printable(t.id),
            printable(t.name),
            printable(t.identity),
            printable(",".join(t.roles)),
            format_time(t.expires_at),
            token_status(t, now),
        ]
        for t in tokens
    ]
    return table(["ID", "NAME", "IDENTITY", "ROLES", "EXPIRES", "STATUS"], rows)


def token_lines(token: auth_pb2.ApiToken) -> list[str]:
    """A token's fields, one per line."""
    lines = [
        f"token {printable(token.id)} {printable(token.name)!r}",
        f"  identity:      {printable(token.identity)}",
        f"  roles:         {printable(', '.join(token.roles))}",
        "  repositories:  "
        + (printable(", ".join(token.repositories)) if token.repositories else "-"),
        f"  expires:       {format_time(token.expires_at)}",
        f"  issued by:     {printable(token.created_by) or '-'} at {format_time(token.created_at)}",
    ]
    if token.HasField("revoked_at"):
        lines.append(
            f"  revoked:       {format_time(token.revoked_at)} by {printable(token.revoked_by)}"
        )
    return lines


def audit_table(events: Sequence[audit_pb2.AuditEvent]) -> list[str]:
    rows = []
    for event in events:
        detail = event.detail.split("\n", 1)[0]
        rows.append(
            [
                format_time(event.time),
                printable(event.identity) or "-",
                printable(event.action),
                printable(event.target) or "-",
                printable(event.outcome),
                printable(detail[:120] + ("..." if len(detail) > 120 else "")),
            ]
        )
    return table(["TIME", "IDENTITY", "ACTION", "TARGET", "OUTCOME", "DETAIL"], rows)


def whoami_lines(me: auth_pb2.WhoAmIResponse) -> list[str]:
    how = printable(me.auth_method)
    if me.token_id:
        how += f" ({printable(me.token_id)})"
    if me.any_repository:
        repositories = "any"
    else:
        repositories = printable(", ".join(me.repositories)) if me.repositories else "none"
    return [
        f"identity:      {printable(me.identity) or '(anonymous: authentication is off)'}",
        f"authenticated: {how}",
        f"roles:         {printable(', '.join(me.roles)) or 'none'}",
        f"repositories:  {repositories}",
    ]
