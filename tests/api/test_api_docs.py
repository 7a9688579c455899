"""Interactive API docs: off (and /openapi.json behind a reader token) by default; with
``--public-docs`` Swagger UI at /docs, its assets served from the package (no CDN)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from icefloe.api.app import create_app
from icefloe.settings import ApiSettings, Settings


def _client(database_url: str, home: Path, *, docs_public: bool) -> Iterator[TestClient]:
    settings = dataclasses.replace(
        Settings(home=home, database_url=database_url), api=ApiSettings(docs_public=docs_public)
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def public(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(database_url, tmp_path, docs_public=True)


@pytest.fixture
def private(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(database_url, tmp_path, docs_public=False)


def test_public_docs_serve_swagger_ui_from_the_package(public: TestClient) -> None:
    page = public.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), assets  # nothing from a CDN
    for asset in assets:
        assert public.get(asset).status_code == 200, asset
    spec = public.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["info"]["title"] == "icefloe"
    assert "https://" not in page.text


def test_docs_are_private_by_default(private: TestClient) -> None:
    assert private.get("/docs").status_code == 404
    refused = private.get("/openapi.json")
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
