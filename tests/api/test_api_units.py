"""The API's pure pieces, without a server: cursors, settings, schema/model agreement, the OpenAPI
document (problem media type, examples, security) and the route templates of the metrics."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from icefloe import models
from icefloe.api import ApiSettings, create_app, pagination, schemas
from icefloe.api.middleware import RouteTemplates
from icefloe.errors import ConfigurationError
from icefloe.settings import Settings


@pytest.mark.parametrize("last_id", [0, 1, 99, 2**63 - 1])
def test_cursor_round_trip(last_id: int) -> None:
    cursor = pagination.encode(last_id)
    assert cursor.isascii() and str(last_id) not in cursor  # opaque
    assert pagination.decode(cursor) == last_id


@pytest.mark.parametrize("bad", ["", "!!!", "bm9wZQ", pagination.encode(1)[:-2] + "xx", "djE6LTE"])
def test_bad_cursors_are_configuration_errors(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="cursor"):
        pagination.decode(bad)


def test_page_cuts_the_extra_item_and_points_after_the_last_kept() -> None:
    assert pagination.page([1, 2, 3], 3, lambda i: i) == ([1, 2, 3], None)
    items, cursor = pagination.page([1, 2, 3, 4], 3, lambda i: i)
    assert items == [1, 2, 3] and pagination.decode(cursor) == 3


def test_api_settings_from_env() -> None:
    assert ApiSettings.from_env({}) == ApiSettings(cors_origins=(), metrics_public=False)
    configured = ApiSettings.from_env(
        {
            "ICEFLOE_API_CORS_ORIGINS": "https://a.example, http://b.example:8080",
            "ICEFLOE_API_METRICS_PUBLIC": "yes",
        }
    )
    assert configured == ApiSettings(("https://a.example", "http://b.example:8080"), True)
    with pytest.raises(ConfigurationError, match="METRICS_PUBLIC"):
        ApiSettings.from_env({"ICEFLOE_API_METRICS_PUBLIC": "maybe"})
    with pytest.raises(ConfigurationError, match="CORS"):
        ApiSettings.from_env({"ICEFLOE_API_CORS_ORIGINS": "ftp://x"})


@pytest.mark.parametrize(
    ("literal", "values"),
    [
        (schemas.Format, models.FORMATS),
        (schemas.OnChange, models.ON_CHANGE),
        (schemas.IngestionStatus, models.INGESTION_STATUSES),
        (schemas.RunStatus, models.RUN_STATUSES),
        (schemas.FileStatus, models.FILE_STATUSES),
        (schemas.Role, models.TOKEN_ROLES),
        (schemas.EngineName, models.ENGINES),
        (schemas.Listing, models.LISTINGS),
    ],
)
def test_schema_literals_match_the_ledger(literal: object, values: tuple[str, ...]) -> None:
    assert typing.get_args(literal) == values


def test_patch_fields_are_the_updatable_ones() -> None:
    from icefloe import ingestions

    fields = {f.alias or name for name, f in schemas.IngestionUpdate.model_fields.items()}
    assert fields == set(ingestions.UPDATABLE)


def test_openapi_documents_problems_examples_and_bearer_auth(tmp_path: Path) -> None:
    doc = create_app(Settings(home=tmp_path)).openapi()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], (method, path, code)
            if path not in ("/healthz", "/readyz"):
                assert operation.get("security"), (method, path)
    for name in ("IngestionCreate", "IngestionOut", "RunOut", "FileOut", "Problem"):
        assert doc["components"]["schemas"][name].get("examples"), name


def test_route_templates_bound_the_metric_labels() -> None:
    routes = RouteTemplates(["/api/v1/runs/{run_id}", "/api/v1/runs/{run_id}/cancel", "/healthz"])
    assert routes("/api/v1/runs/42") == "/api/v1/runs/{run_id}"
    assert routes("/api/v1/runs/42/cancel") == "/api/v1/runs/{run_id}/cancel"
    assert routes("/healthz") == "/healthz"
    assert routes("/wp-admin/../../etc/passwd") == "unmatched"


def test_credentials_in_uris_are_redacted() -> None:
    redact = schemas._redact
    assert redact("s3://AKIA:secret@bucket/p/") == "s3://***@bucket/p/"
    assert redact("s3://bucket/p/") == "s3://bucket/p/"
    assert redact("sc://spark:15002/;user_id=etl;token=abc123") == "sc://spark:15002/;user_id=etl;token=***"
