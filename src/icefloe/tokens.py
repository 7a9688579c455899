"""API tokens: bearer secrets for the REST API, each with a role. The CLI and the API call these.

A token is ``ifl_`` + 43 URL-safe characters from :func:`secrets.token_urlsafe` (256 bits). Only its
SHA-256 is stored: with that much entropy a salted slow hash adds nothing, and a plain digest lets
the lookup be one indexed equality. The secret is returned once, by :func:`create`.

Roles are ordered: a reader reads; an operator also triggers runs and retries; an admin also
manages ingestions and tokens.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from icefloe.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
)
from icefloe.models import TOKEN_ROLES, ApiToken

PREFIX = "ifl_"
# last_used_at is refreshed when older than this: one write a minute per token, not one per request.
LAST_USED_RESOLUTION_SECONDS = 60


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(db: Engine, *, name: str, role: str) -> tuple[ApiToken, str]:
    """A new token; returns it with its secret, which is not stored and cannot be shown again."""
    if role not in TOKEN_ROLES:
        raise ConfigurationError(f"role must be one of {', '.join(TOKEN_ROLES)}, got {role!r}")
    if not name or len(name) > 200:
        raise ConfigurationError("token name must be 1 to 200 characters")
    secret = PREFIX + secrets.token_urlsafe(32)
    with Session(db, expire_on_commit=False) as session:
        token = ApiToken(name=name, role=role, token_hash=digest(secret))
        session.add(token)
        try:
            session.commit()
        except IntegrityError as exc:
            raise ConflictError(f"a token named {name!r} exists already (revoke it first)") from exc
        session.refresh(token)
        return token, secret


def list_all(db: Engine, *, include_revoked: bool = True) -> list[ApiToken]:
    with Session(db, expire_on_commit=False) as session:
        stmt = select(ApiToken).order_by(ApiToken.id)
        if not include_revoked:
            stmt = stmt.where(ApiToken.revoked_at.is_(None))
        return list(session.scalars(stmt))


def revoke(db: Engine, name: str) -> ApiToken:
    """Revoke the live token named ``name``; it stops working at once (no cache anywhere)."""
    with Session(db, expire_on_commit=False) as session:
        token = session.scalars(
            update(ApiToken)
            .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
            .values(revoked_at=func.now())
            .returning(ApiToken)
        ).one_or_none()
        session.commit()
        if token is None:
            raise NotFoundError(f"no live token named {name!r}")
        return token


def authenticate(db: Engine, secret: str | None) -> ApiToken:
    """The live token whose secret this is; raises :class:`AuthenticationError` otherwise.

    Also records the use (``last_used_at``), at most once per minute per token.
    """
    if not secret or not secret.startswith(PREFIX):
        raise AuthenticationError("a valid API token is required (Authorization: Bearer <token>)")
    with Session(db, expire_on_commit=False) as session:
        row = session.execute(
            select(ApiToken, func.now()).where(ApiToken.token_hash == digest(secret), ApiToken.revoked_at.is_(None))
        ).one_or_none()
        if row is None:
            raise AuthenticationError("the API token is unknown or revoked")
        token, now = row
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
            session.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
            session.commit()
            token.last_used_at = now
        return token


def require(token: ApiToken, role: str) -> None:
    """Raise :class:`PermissionDeniedError` unless ``token``'s role is ``role`` or above."""
    if TOKEN_ROLES.index(token.role) < TOKEN_ROLES.index(role):
        raise PermissionDeniedError(f"this needs the {role} role; token {token.name!r} is a {token.role}")
