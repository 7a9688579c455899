"""Dependencies of the routes as ``Annotated`` aliases: the runtime, the ledger, the caller's
token checked for a role, and the ingestion a path names.

Authentication comes first in every route's signature, so a caller without the right token learns
nothing (not even whether an ingestion exists): 401/403 before any 404 or 422.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from icefloe import ingestions, tokens
from icefloe.models import ApiToken, Ingestion
from icefloe.runtime import Runtime

_INT64 = 2**63 - 1

bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `icefloe token create --name N --role reader|operator|admin`.",
)


# Dependencies that do no I/O are ``async``: FastAPI runs them on the event loop instead of handing
# each to a worker thread (a hop that costs more than the work itself under load).


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_db(rt: RuntimeDep) -> Engine:
    return rt.db


DbDep = Annotated[Engine, Depends(get_db)]


def current_token(
    request: Request,
    db: DbDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiToken:
    """The caller's live token (401 otherwise); its name goes into the request log."""
    token = tokens.authenticate(db, credentials.credentials if credentials else None)
    request.state.token_name = token.name
    return token


def _role(role: str) -> Callable[[ApiToken], Awaitable[ApiToken]]:
    async def check(token: Annotated[ApiToken, Depends(current_token)]) -> ApiToken:
        tokens.require(token, role)
        return token

    check.__name__ = f"require_{role}"
    return check


Reader = Annotated[ApiToken, Depends(_role("reader"))]
Operator = Annotated[ApiToken, Depends(_role("operator"))]
Admin = Annotated[ApiToken, Depends(_role("admin"))]


def get_ingestion(
    db: DbDep,
    ingestion_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=200,
            description="the ingestion's numeric id, or its name",
            examples=["1", "orders"],
        ),
    ],
) -> Ingestion:
    key: str | int = ingestion_id
    if ingestion_id.isascii() and ingestion_id.isdigit():
        key = int(ingestion_id)
        if key > _INT64:
            key = ingestion_id  # no such id; looked up as a name, which says "not found" the same way
    return ingestions.get(db, key)


IngestionDep = Annotated[Ingestion, Depends(get_ingestion)]

RunId = Annotated[int, Path(ge=1, le=_INT64, description="the run's id", examples=[42])]
FileId = Annotated[int, Path(ge=1, le=_INT64, description="the file's id in the ledger", examples=[7])]
