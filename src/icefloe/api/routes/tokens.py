"""``/api/v1/tokens``: API tokens, for admins (the same as `icefloe token create|list|revoke`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from icefloe import tokens
from icefloe.api.deps import Admin, DbDep
from icefloe.api.ledger_schemas import TokenCreate, TokenCreated, TokenList, TokenOut
from icefloe.api.problems import responses

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.get("", response_model=TokenList, responses=responses(401, 403), summary="List tokens")
def list_tokens(_: Admin, db: DbDep) -> TokenList:
    """Every token, revoked ones included; never a secret."""
    return TokenList(items=[TokenOut.of(t) for t in tokens.list_all(db)])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    responses=responses(400, 401, 403, 409, 422),
    summary="Create a token",
)
def create_token(_: Admin, db: DbDep, body: TokenCreate) -> TokenCreated:
    """The response holds the secret, shown this once; only its hash is stored."""
    token, secret = tokens.create(db, name=body.name, role=body.role)
    return TokenCreated(**TokenOut.of(token).model_dump(), token=secret)


@router.post(
    "/{name}/revoke",
    response_model=TokenOut,
    responses=responses(401, 403, 404, 422),
    summary="Revoke a token",
)
def revoke_token(_: Admin, db: DbDep, name: Annotated[str, Path(min_length=1, max_length=200)]) -> TokenOut:
    """The token stops working at once; it stays listed with `revoked_at`."""
    return TokenOut.of(tokens.revoke(db, name))
