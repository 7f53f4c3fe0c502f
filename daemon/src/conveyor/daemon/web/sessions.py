"""Dashboard sessions: who is looking, from a token or a login link.

The dashboard knows the same identities as the API. A person signs in with
a bearer token (the login form) or a one-time login link
(:meth:`Sessions.login_link`, printed by ``conveyor web-login``); the
browser then holds only a random session id, in an ``HttpOnly``,
``SameSite=Strict`` cookie. Sessions live in the daemon's memory (a restart
signs everyone out) for at most :data:`LIFETIME`; a session made from a
token authenticates that token again at every request, so a revoked or
expired token ends its sessions at once, and roles are always the token's.
With authentication off, every visitor gets an anonymous (admin) session,
as every API caller is an anonymous admin then.

Each session has a CSRF token that every form posting to the dashboard
carries (see :meth:`Session.check_csrf`).
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from conveyor.daemon.auth.access import AccessControl
from conveyor.daemon.auth.identity import ANONYMOUS, Principal
from conveyor.daemon.errors import Unauthenticated

#: Seconds a session lasts after sign-in.
LIFETIME = 12 * 3600.0
#: Seconds a login link may wait to be opened.
LINK_LIFETIME = 120.0
#: Sessions (and login links) kept at once; the oldest go first.
MAX_SESSIONS = 10_000
COOKIE = "conveyor_session"


@dataclass
class Session:
    id: str
    csrf: str
    expires_at: float
    #: The bearer token the session was made from ("" for a login link or
    #: with authentication off): checked again at every request.
    token: str = ""
    #: The caller, for sessions not made from a token.
    principal: Principal = ANONYMOUS

    def check_csrf(self, value: str) -> bool:
        """Whether a form's ``csrf`` field is this session's token."""
        return bool(value) and hmac.compare_digest(value.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, access: AccessControl) -> None:
        self.access = access
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        #: Login links not opened yet: code -> (principal, expires at).
        self._links: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether visitors must sign in (the daemon's ``auth`` setting)."""
        return self.access.enabled

    def _new(self, *, token: str = "", principal: Principal = ANONYMOUS) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires_at=time.time() + LIFETIME,
            token=token,
            principal=principal,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def anonymous(self) -> Session:
        """A session for a visitor when authentication is off."""
        return self._new()

    def login_with_token(self, token: str, peer: str) -> tuple[Session, Principal]:
        """A session for the holder of ``token``; raises Unauthenticated
        saying what is wrong with it."""
        principal = self._token_principal(token, peer)
        return self._new(token=token), principal

    def login_link(self, principal: Principal) -> tuple[str, float]:
        """A one-time code that signs its opener in as ``principal``, and
        when it expires."""
        code = secrets.token_urlsafe(32)
        expires = time.time() + LINK_LIFETIME
        self._links[code] = (principal, expires)
        while len(self._links) > MAX_SESSIONS:
            self._links.popitem(last=False)
        return code, expires

    def redeem(self, code: str) -> tuple[Session, Principal]:
        """The session of a login link, which works once. Raises
        Unauthenticated for a used, expired or unknown code."""
        found = self._links.pop(code, None) if code else None
        if found is None:
            raise Unauthenticated(
                "this login link is not valid: it was used already, or never existed;"
                " run `conveyor web-login` for a new one"
            )
        principal, expires = found
        if time.time() >= expires:
            raise Unauthenticated(
                f"this login link expired (links last {LINK_LIFETIME:g} s); run"
                " `conveyor web-login` for a new one"
            )
        return self._new(principal=principal), principal

    def get(self, session_id: str) -> Session | None:
        """The live session with this id, None when unknown or expired."""
        session = self._sessions.get(session_id) if session_id else None
        if session is None:
            return None
        if time.time() >= session.expires_at:
            del self._sessions[session_id]
            return None
        return session

    def principal(self, session: Session, peer: str) -> Principal:
        """Who the session's holder is now; raises Unauthenticated (and
        ends the session) when its token no longer authenticates."""
        if not self.enabled:
            return dataclasses.replace(ANONYMOUS, peer=peer)
        if not session.token:
            return dataclasses.replace(session.principal, peer=peer)
        try:
            return self._token_principal(session.token, peer)
        except Unauthenticated:
            self.end(session.id)
            raise

    def _token_principal(self, token: str, peer: str) -> Principal:
        if not self.enabled:
            return dataclasses.replace(ANONYMOUS, peer=peer)
        metadata = [("authorization", f"Bearer {token.strip()}")]
        return self.access.authenticate(metadata, peer, dict)

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
