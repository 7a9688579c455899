"""Errors as RFC 9457 problem details (``application/problem+json``), mapped once, here.

Routes raise icefloe's own errors (:mod:`icefloe.errors`) and never ``HTTPException``; this module
turns each class into a status and a problem ``type``. Third-party errors that reach the edge are
translated here too: a value PostgreSQL refuses is a 422, a ledger that cannot be reached a 503,
anything else a 500 whose detail names the request id and nothing of the error itself (its text
may hold a connection URL or a parameter).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from icefloe.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    IcefloeError,
    LedgerUnavailableError,
    NotFoundError,
    PermissionDeniedError,
    RunInProgressError,
    SourceError,
)

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "urn:icefloe:problem:"

# Most specific first: the first class an error is an instance of decides.
_MAPPING: tuple[tuple[type[IcefloeError], int, str], ...] = (
    (RunInProgressError, 409, "run-in-progress"),
    (ConflictError, 409, "conflict"),
    (NotFoundError, 404, "not-found"),
    (ConfigurationError, 422, "invalid-request"),
    (AuthenticationError, 401, "unauthenticated"),
    (PermissionDeniedError, 403, "forbidden"),
    (SourceError, 502, "source-unavailable"),
)


class Problem(BaseModel):
    """RFC 9457 problem details. ``request_id`` matches the ``X-Request-ID`` response header and
    the server's log; ``errors`` lists the invalid fields of a 422 from request validation."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:icefloe:problem:not-found",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "no ingestion named 'orders'",
                    "instance": "/api/v1/ingestions/orders",
                    "request_id": "5f0c6c1e9b6a4f44a1f1d2f0b3c4d5e6",
                }
            ]
        },
    )

    type: str = Field(description="URI naming the kind of problem (see docs/api.md)")
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem(request: Request, status: int, detail: str, kind: str | None = None, **extra: Any) -> JSONResponse:
    """A problem+json response; ``kind`` None means ``about:blank`` (the status says it all)."""
    body: dict[str, Any] = {
        "type": _TYPE_BASE + kind if kind else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
        **extra,
    }
    headers = {"WWW-Authenticate": 'Bearer realm="icefloe"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


async def _icefloe_error(request: Request, exc: Exception) -> JSONResponse:
    for cls, status, kind in _MAPPING:
        if isinstance(exc, cls):
            return problem(request, status, str(exc), kind)
    log.error("request failed: %s", exc, exc_info=exc)
    return problem(request, 500, str(exc), "internal")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The submitted values are not echoed back (``input``): they may hold a secret.
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
    return problem(request, 422, f"{where}: {first['msg']}", "invalid-request", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    response = problem(request, exc.status_code, detail)
    for name, value in (exc.headers or {}).items():
        response.headers.setdefault(name, value)
    return response


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    log.info("value refused by the ledger database: %s", type(exc).__name__)
    return problem(
        request,
        422,
        "a value is not accepted by the ledger database (out of range, or a NUL character)",
        "invalid-request",
    )


async def _ledger_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("ledger database unavailable: %s", type(exc).__name__, exc_info=exc)
    return problem(request, 503, "the ledger database cannot be reached; retry later", "unavailable")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    request_id = getattr(request.state, "request_id", None)
    return problem(request, 500, f"internal error (request id {request_id}); see the server log", "internal")


def install(app: FastAPI) -> None:
    """Register the handlers: every error response of the app is a problem."""
    app.add_exception_handler(IcefloeError, _icefloe_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(LedgerUnavailableError, _ledger_unavailable)  # before IcefloeError's (MRO)
    app.add_exception_handler(OperationalError, _ledger_unavailable)
    app.add_exception_handler(InterfaceError, _ledger_unavailable)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a route's problems (their media type is fixed in ``app.openapi``)."""
    descriptions = {
        400: "Malformed request body (not JSON, or not UTF-8)",
        401: "No valid API token (missing, unknown or revoked)",
        403: "The token's role does not allow this",
        404: "No such resource",
        409: "Conflict with the current state (duplicate name, run in progress, busy)",
        422: "Invalid request (body, query or path)",
        503: "Not ready",
    }
    return {s: {"model": Problem, "description": descriptions.get(s, HTTPStatus(s).phrase)} for s in statuses}
