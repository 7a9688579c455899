"""The application factory. Nothing is built at import time: :func:`create_app` takes validated
settings and builds the runtime (ledger pool, catalog, S3 client) when the app starts."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry

from icefloe import __version__, dashboard
from icefloe.api import problems
from icefloe.api.embedded_worker import EmbeddedWorker
from icefloe.api.main import api_router, root_router
from icefloe.api.middleware import RequestContextMiddleware, RequestMetrics, RouteTemplates
from icefloe.metrics import LedgerCollector
from icefloe.runtime import Runtime
from icefloe.settings import Settings

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Manage icefloe's ingestions over HTTP: define them, trigger runs and follow them, read the ledger
of their files and retry failed ones. The CLI and this API call the same functions.

**Authentication**: `Authorization: Bearer <token>`, with a token from
`icefloe token create --name N --role reader|operator|admin`. Readers read; operators also trigger
runs, cancel them and retry files; admins also manage ingestions and tokens. Only `/healthz` and
`/readyz` answer without a token.

**Errors** are RFC 9457 problem details (`application/problem+json`).
"""


def create_app(settings: Settings | None = None, *, with_worker: bool = False) -> FastAPI:
    """The API on the ledger, catalog and S3 of ``settings`` (default: read from the environment
    here, the API's entry point); ``settings.api`` holds its own (CORS, public metrics).

    ``with_worker``: also execute queued runs in this process (``icefloe serve --with-worker``).
    """
    settings = settings or Settings.from_env(os.environ)
    api_settings = settings.api

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Connect (starting the embedded PostgreSQL if needed) and migrate now: fail at start,
        # not on the first request.
        runtime = Runtime.open(settings)
        app.state.runtime = runtime
        ledger_gauges = LedgerCollector(runtime.db)
        registry.register(ledger_gauges)
        embedded = EmbeddedWorker(settings) if with_worker else None
        if embedded is not None:
            embedded.start()
        try:
            yield
        finally:
            if embedded is not None:
                embedded.stop(grace_seconds=settings.lease_seconds)
            registry.unregister(ledger_gauges)
            runtime.close()

    app = FastAPI(
        title="icefloe",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        # /openapi.json is a route of ours (a reader token, or public with --public-docs); /docs is
        # ours too, with the Swagger UI assets shipped in a wheel (no CDN).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    registry = CollectorRegistry(auto_describe=True)
    app.state.api_settings = api_settings
    app.state.metrics_registry = registry
    problems.install(app)
    app.include_router(root_router)
    app.include_router(api_router)
    dashboard.install(app)  # at /, from this process: the same functions and ledger pool as the API

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = _problem_media_type(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if api_settings.docs_public:
        _serve_docs(app)

    if api_settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(api_settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Location", "X-Request-ID"],
        )
    app.add_middleware(
        RequestContextMiddleware,
        metrics=RequestMetrics(registry),
        routes=RouteTemplates([*app.openapi()["paths"], "/openapi.json", *dashboard.ROUTES]),
    )
    return app


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` from the assets of the ``swagger-ui-bundle-v2`` wheel: nothing is
    fetched from a CDN, so the docs work offline and behind a firewall."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="icefloe API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )


def _problem_media_type(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are ``application/problem+json``: FastAPI documents every declared response
    as ``application/json``; move the error ones, and drop FastAPI's unused validation schemas."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if code[0] in "45" and "application/json" in content:
                    moved = content[problems.MEDIA_TYPE] = content.pop("application/json")
                    if moved.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                        moved["schema"] = {"$ref": "#/components/schemas/Problem"}
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
