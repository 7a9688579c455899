"""The routers of the API, assembled in one place: resources under ``/api/v1``, probes at the root."""

from __future__ import annotations

from fastapi import APIRouter

from icefloe.api.routes import files, health, ingestions, runs, schema, tokens

API_PREFIX = "/api/v1"

api_router = APIRouter(prefix=API_PREFIX)
api_router.include_router(ingestions.router)
api_router.include_router(files.router)
api_router.include_router(schema.router)
api_router.include_router(runs.router)
api_router.include_router(tokens.router)

root_router = APIRouter()
root_router.include_router(health.router)
