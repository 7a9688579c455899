"""The auth matrix: every route x {no token, revoked token, reader, operator, admin}, against the
app in this process (``TestClient``).

Routes that change something are called on targets that do not exist (ingestion 999999, ...) or
with an empty body, so an allowed call answers 404/422 and a refused one 401/403, without a side
effect either way. ``test_matrix_covers_every_route`` keeps the matrix equal to the app's routes.
"""

from __future__ import annotations

from typing import Any

import pytest

from icefloe.api import create_app
from icefloe.settings import Settings
from tests.support.api import InProcessApi

FIXTURE = "matrix-fixture"
MISSING = "999999"

# (method, path template, concrete path, JSON body, least role allowed; None: open to all)
ROUTES: list[tuple[str, str, str, Any, str | None]] = [
    ("GET", "/healthz", "/healthz", None, None),
    ("GET", "/readyz", "/readyz", None, None),
    ("GET", "/metrics", "/metrics", None, "reader"),
    ("GET", "/openapi.json", "/openapi.json", None, "reader"),
    ("GET", "/api/v1/ingestions", "/api/v1/ingestions", None, "reader"),
    ("POST", "/api/v1/ingestions", "/api/v1/ingestions", {}, "admin"),
    ("GET", "/api/v1/ingestions/{ingestion_id}", f"/api/v1/ingestions/{FIXTURE}", None, "reader"),
    ("PATCH", "/api/v1/ingestions/{ingestion_id}", f"/api/v1/ingestions/{MISSING}", {}, "admin"),
    ("DELETE", "/api/v1/ingestions/{ingestion_id}", f"/api/v1/ingestions/{MISSING}", None, "admin"),
    ("POST", "/api/v1/ingestions/{ingestion_id}/pause", f"/api/v1/ingestions/{MISSING}/pause", None, "admin"),
    (
        "POST",
        "/api/v1/ingestions/{ingestion_id}/resume",
        f"/api/v1/ingestions/{MISSING}/resume",
        None,
        "admin",
    ),
    ("POST", "/api/v1/ingestions/{ingestion_id}/run", f"/api/v1/ingestions/{MISSING}/run", None, "operator"),
    ("GET", "/api/v1/ingestions/{ingestion_id}/runs", f"/api/v1/ingestions/{FIXTURE}/runs", None, "reader"),
    ("GET", "/api/v1/ingestions/{ingestion_id}/files", f"/api/v1/ingestions/{FIXTURE}/files", None, "reader"),
    (
        "GET",
        "/api/v1/ingestions/{ingestion_id}/files/{file_id}",
        f"/api/v1/ingestions/{FIXTURE}/files/{MISSING}",
        None,
        "reader",
    ),
    (
        "POST",
        "/api/v1/ingestions/{ingestion_id}/files/retry",
        f"/api/v1/ingestions/{MISSING}/files/retry",
        None,
        "operator",
    ),
    (
        "POST",
        "/api/v1/ingestions/{ingestion_id}/files/{file_id}/retry",
        f"/api/v1/ingestions/{FIXTURE}/files/{MISSING}/retry",
        None,
        "operator",
    ),
    (
        "POST",
        "/api/v1/ingestions/{ingestion_id}/files/{file_id}/skip",
        f"/api/v1/ingestions/{FIXTURE}/files/{MISSING}/skip",
        {"reason": "matrix"},
        "operator",
    ),
    (
        "POST",
        "/api/v1/ingestions/{ingestion_id}/files/{file_id}/reingest",
        f"/api/v1/ingestions/{FIXTURE}/files/{MISSING}/reingest",
        None,
        "operator",
    ),
    (
        "GET",
        "/api/v1/ingestions/{ingestion_id}/schema/pending",
        f"/api/v1/ingestions/{FIXTURE}/schema/pending",
        None,
        "reader",
    ),
    (
        "POST",
        "/api/v1/ingestions/{ingestion_id}/schema/pending/{change_id}/approve",
        f"/api/v1/ingestions/{FIXTURE}/schema/pending/{MISSING}/approve",
        None,
        "operator",
    ),
    (
        "POST",
        "/api/v1/ingestions/{ingestion_id}/schema/pending/{change_id}/reject",
        f"/api/v1/ingestions/{FIXTURE}/schema/pending/{MISSING}/reject",
        None,
        "operator",
    ),
    (
        "GET",
        "/api/v1/ingestions/{ingestion_id}/schema/history",
        f"/api/v1/ingestions/{FIXTURE}/schema/history",
        None,
        "reader",
    ),
    ("GET", "/api/v1/runs/{run_id}", f"/api/v1/runs/{MISSING}", None, "reader"),
    ("POST", "/api/v1/runs/{run_id}/cancel", f"/api/v1/runs/{MISSING}/cancel", None, "operator"),
    ("GET", "/api/v1/tokens", "/api/v1/tokens", None, "admin"),
    ("POST", "/api/v1/tokens", "/api/v1/tokens", {}, "admin"),
    ("POST", "/api/v1/tokens/{name}/revoke", "/api/v1/tokens/nobody/revoke", None, "admin"),
]
IDENTITIES = ["none", "revoked", "reader", "operator", "admin"]
RANK = {"reader": 0, "operator": 1, "admin": 2}


@pytest.fixture(scope="module")
def api(module_api: InProcessApi) -> InProcessApi:
    with module_api.client("admin") as admin:
        response = admin.post(
            "/api/v1/ingestions",
            json={"name": FIXTURE, "source": "s3://nowhere/x/", "format": "jsonl", "table": "matrix.t"},
        )
        assert response.status_code == 201, response.text
    return module_api


def test_matrix_covers_every_route(tmp_path: Any) -> None:
    app = create_app(Settings(home=tmp_path))
    documented = {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}
    served = documented | {("GET", "/openapi.json")}  # the one route left out of the document
    assert served == {(method, template) for method, template, *_ in ROUTES}


@pytest.mark.parametrize("identity", IDENTITIES)
@pytest.mark.parametrize(
    ("method", "template", "path", "body", "least"), ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES]
)
def test_auth_matrix(
    api: InProcessApi, identity: str, method: str, template: str, path: str, body: Any, least: str | None
) -> None:
    client = api.client(token=api.tokens[identity] if identity != "none" else None)
    with client:
        response = client.request(method, path, json=body)
    if least is None:
        expected = "allowed"
    elif identity in ("none", "revoked"):
        expected = "unauthenticated"
    elif RANK[identity] < RANK[least]:
        expected = "forbidden"
    else:
        expected = "allowed"
    if expected == "unauthenticated":
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
    elif expected == "forbidden":
        assert response.status_code == 403, response.text
    else:
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert {"type", "title", "status", "detail"} <= problem.keys()
        assert problem["status"] == response.status_code
        assert problem["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "header",
    ["Bearer ifl_not-a-real-token", "Bearer", "Basic dXNlcjpwYXNz", "ifl_no-scheme", "Bearer garbage"],
)
def test_malformed_or_unknown_credentials_are_401(api: InProcessApi, header: str) -> None:
    with api.client() as anonymous:
        response = anonymous.get("/api/v1/ingestions", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_revocation_takes_effect_at_once_and_last_use_is_recorded(api: InProcessApi) -> None:
    with api.client("admin") as admin:
        created = admin.post("/api/v1/tokens", json={"name": "short-lived", "role": "reader"})
        assert created.status_code == 201, created.text
        secret = created.json()["token"]
        listed = {t["name"]: t for t in admin.get("/api/v1/tokens").json()["items"]}
        assert listed["short-lived"]["last_used_at"] is None
        assert all("token" not in t and "token_hash" not in t for t in listed.values())

        with api.client(token=secret) as reader:
            assert reader.get("/api/v1/ingestions").status_code == 200
            listed = {t["name"]: t for t in admin.get("/api/v1/tokens").json()["items"]}
            assert listed["short-lived"]["last_used_at"] is not None

            revoked = admin.post("/api/v1/tokens/short-lived/revoke")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
            assert reader.get("/api/v1/ingestions").status_code == 401
        # The name is free again for a new token; the revoked one stays listed.
        assert admin.post("/api/v1/tokens", json={"name": "short-lived", "role": "reader"}).status_code == 201
        names = [t["name"] for t in admin.get("/api/v1/tokens").json()["items"]]
        assert names.count("short-lived") == 2
