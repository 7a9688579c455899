"""Probes and metrics, outside ``/api/v1``: ``/healthz`` (the process answers), ``/readyz`` (the
ledger and the catalog answer), ``/metrics`` (Prometheus; a reader token unless opened by
``ICEFLOE_API_METRICS_PUBLIC``) and ``/openapi.json`` (a reader token)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from icefloe import metrics, tokens
from icefloe.api.deps import DbDep, RuntimeDep, bearer
from icefloe.api.ledger_schemas import Health, Readiness
from icefloe.api.problems import Problem, problem, responses

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """The process answers. Open: no token needed."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Problem, "description": "The ledger or the catalog cannot be reached"}},
    summary="Readiness",
)
def readyz(rt: RuntimeDep, request: Request) -> Any:
    """The ledger database and the Iceberg catalog answer. Open: no token needed."""
    checks: dict[str, str] = {}
    try:
        with rt.db.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database: %s", type(exc).__name__)
        checks["database"] = f"unavailable ({type(exc).__name__})"
    try:
        rt.catalog.list_namespaces()
        checks["catalog"] = "ok"
    except Exception as exc:
        log.warning("readiness: catalog: %s", type(exc).__name__)
        checks["catalog"] = f"unavailable ({type(exc).__name__})"
    if all(v == "ok" for v in checks.values()):
        return Readiness(checks=checks)
    failing = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem(request, 503, f"not ready: {failing} unavailable", "unavailable", checks=checks)


def _metrics_access(
    request: Request,
    db: DbDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    if request.app.state.api_settings.metrics_public:
        return
    token = tokens.authenticate(db, credentials.credentials if credentials else None)
    request.state.token_name = token.name


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
        **responses(401),
    },
    dependencies=[Depends(_metrics_access)],
    summary="Prometheus metrics",
)
def prometheus_metrics(request: Request) -> Response:
    """API request counters and latencies, this process's worker counters (with `--with-worker`),
    and ledger gauges (files by status, queue depth per ingestion) read at scrape time."""
    body = generate_latest(request.app.state.metrics_registry) + generate_latest(metrics.REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _docs_access(
    request: Request,
    db: DbDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """``/openapi.json`` needs a reader token unless the server publishes its docs (--public-docs)."""
    if request.app.state.api_settings.docs_public:
        return
    token = tokens.authenticate(db, credentials.credentials if credentials else None)
    request.state.token_name = token.name


@router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(_docs_access)])
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())
