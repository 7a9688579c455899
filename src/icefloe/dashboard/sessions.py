"""Browser sessions of the dashboard: sign in with an API token, get a cookie.

The cookie carries a random secret (256 bits), never the API token; only its SHA-256 is stored
(as for tokens: with that much entropy a plain digest is enough and keeps the lookup one indexed
equality). Each session has its own CSRF token, which every form sends back. A session is checked
against its API token on every request: a revoked token signs its browsers out at once.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from icefloe import tokens
from icefloe.models import TOKEN_ROLES, ApiToken, DashboardSession

COOKIE = "icefloe_session"
LIFETIME = dt.timedelta(hours=12)


@dataclass(frozen=True)
class SignedIn:
    """Who a request's session belongs to, and the CSRF token its forms carry."""

    token: ApiToken
    csrf: str

    @property
    def role(self) -> str:
        return self.token.role

    def may(self, role: str) -> bool:
        """Whether this session's role is ``role`` or above (what the pages show)."""
        return TOKEN_ROLES.index(self.token.role) >= TOKEN_ROLES.index(role)


def sign_in(db: Engine, secret: str) -> tuple[str, SignedIn]:
    """A new session for the API token ``secret`` (``AuthenticationError`` for a wrong one):
    (the cookie's value, the session)."""
    token = tokens.authenticate(db, secret.strip())
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with Session(db) as session:
        # Expired sessions are dropped here, at the rare write, instead of by a sweeper.
        session.execute(delete(DashboardSession).where(DashboardSession.expires_at < func.now()))
        session.add(
            DashboardSession(
                id_hash=tokens.digest(cookie),
                token_id=token.id,
                csrf=csrf,
                expires_at=func.now() + LIFETIME,
            )
        )
        session.commit()
    return cookie, SignedIn(token, csrf)


def lookup(db: Engine, cookie: str | None) -> SignedIn | None:
    """The live session of this cookie (its token live too), or None."""
    if not cookie or len(cookie) > 100:
        return None
    with Session(db, expire_on_commit=False) as session:
        row = session.execute(
            select(ApiToken, DashboardSession.csrf)
            .join(DashboardSession, DashboardSession.token_id == ApiToken.id)
            .where(
                DashboardSession.id_hash == tokens.digest(cookie),
                DashboardSession.expires_at > func.now(),
                ApiToken.revoked_at.is_(None),
            )
        ).one_or_none()
    return SignedIn(row[0], row[1]) if row is not None else None


def sign_out(db: Engine, cookie: str | None) -> None:
    if cookie:
        with Session(db) as session:
            session.execute(delete(DashboardSession).where(DashboardSession.id_hash == tokens.digest(cookie)))
            session.commit()


def csrf_matches(expected: str, sent: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the one a form sent."""
    return sent is not None and hmac.compare_digest(expected.encode(), sent.encode())
