"""Resources and their errors, against the app in this process (``TestClient``, no worker):
problem details for bad input, missing resources and conflicts; pagination that stays correct
while rows arrive; run cancellation; PATCH; deleting a busy ingestion; CORS off by default;
request ids."""

from __future__ import annotations

import random
import string
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from icefloe.api import ApiSettings
from tests.support.api import InProcessApi


def spec() -> dict[str, str]:
    """An ingestion's required fields, with a source of its own: two ingestions of one table whose
    sources overlap are refused."""
    return {"source": f"s3://landing/orders-{uuid.uuid4().hex[:8]}/", "format": "jsonl", "table": "shop.orders"}


@pytest.fixture(scope="module")
def admin(module_api: InProcessApi) -> Iterator[httpx2.Client]:
    with module_api.client("admin") as client:
        yield client


@pytest.fixture(scope="module")
def operator(module_api: InProcessApi) -> Iterator[httpx2.Client]:
    with module_api.client("operator") as client:
        yield client


@pytest.fixture(scope="module")
def db(module_database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(module_database_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def ingestion(admin: httpx2.Client) -> dict[str, Any]:
    created = admin.post("/api/v1/ingestions", json={"name": f"i-{uuid.uuid4().hex[:8]}", **spec()})
    assert created.status_code == 201, created.text
    return dict(created.json())


def assert_problem(response: httpx2.Response, status: int, kind: str, detail_has: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = dict(response.json())
    assert body["type"] == f"urn:icefloe:problem:{kind}"
    assert body["status"] == status and body["title"] and body["detail"]
    assert detail_has in body["detail"], body
    return body


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"format": "xml"}, "format"),
        ({"pattern": "events/[abc"}, ""),
        ({"table": "no_namespace"}, "namespace"),
        ({"source": "https://bucket/prefix/"}, "s3://"),
        ({"schedule_cron": "not a cron"}, "cron"),
        ({"since": "2025-01-01T00:00:00"}, "since"),
        ({"max_files_per_commit": 0}, "max_files_per_commit"),
        ({"schema": {"id": "no-such-type"}}, ""),
        ({"on_change": "merge"}, "on_change"),
        ({"unknown_option": 1}, "unknown_option"),
        ({"name": "12345"}, "all digits"),  # GET /ingestions/12345 would mean the id
        ({"name": "invoice\u202egpj.exe"}, "U+202E"),  # a bidi override: reads as something else
        ({"name": "tab\u200b"}, "U+200B"),
        ({"table": "shop. orders"}, "blanks"),
        ({"table": "shop..orders"}, "empty part"),
        ({"table": "shop.or/ders"}, "path"),
        ({"table": "shop.or\u2066ders"}, "U+2066"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_bad_ingestions_are_422(admin: httpx2.Client, change: dict[str, Any], detail: str) -> None:
    body = {"name": f"bad-{uuid.uuid4().hex[:8]}", **spec(), **change}
    assert_problem(admin.post("/api/v1/ingestions", json=body), 422, "invalid-request", detail)


def test_overlapping_ingestions_of_one_table_are_refused(admin: httpx2.Client) -> None:
    source = f"s3://landing/ov-{uuid.uuid4().hex[:8]}/"
    first = {"name": f"ov-{uuid.uuid4().hex[:6]}", "source": source, "format": "csv", "table": "shop.ov"}
    assert admin.post("/api/v1/ingestions", json={**first, "pattern": "*.csv"}).status_code == 201
    nested = {"name": f"ov-{uuid.uuid4().hex[:6]}", "source": source + "eu/", "format": "csv", "table": "SHOP.ov"}
    # Below the first one's prefix, and "*.csv" stays within one segment: no key matches both.
    second = admin.post("/api/v1/ingestions", json=nested)
    assert second.status_code == 201, second.text
    # The first one widened to every .csv below it would share eu/*.csv with the second.
    widened = admin.patch(f"/api/v1/ingestions/{first['name']}", json={"pattern": "**/*.csv"})
    assert_problem(widened, 409, "conflict", f"{nested['name']!r} already writes table SHOP.ov from {source}eu/")
    assert admin.get(f"/api/v1/ingestions/{first['name']}").json()["pattern"] == "*.csv"
    third = {**nested, "name": f"ov-{uuid.uuid4().hex[:6]}", "source": source + "eu/de/"}
    assert_problem(admin.post("/api/v1/ingestions", json=third), 409, "conflict", "overlaps this source")
    # Another table, another bucket or a prefix beside it: no overlap.
    for other in ({"table": "shop.ov2"}, {"source": "s3://elsewhere/" + source[5:]}, {"source": source[:-1] + "x/"}):
        made = admin.post("/api/v1/ingestions", json={**third, "name": f"ov-{uuid.uuid4().hex[:6]}", **other})
        assert made.status_code == 201, (other, made.text)
    renamed = admin.patch(f"/api/v1/ingestions/{first['name']}", json={"name": "42"})
    assert_problem(renamed, 422, "invalid-request", "all digits")


def test_not_found_and_duplicate(admin: httpx2.Client, ingestion: dict[str, Any]) -> None:
    assert_problem(admin.get("/api/v1/ingestions/no-such-thing"), 404, "not-found", "no-such-thing")
    assert_problem(admin.get("/api/v1/runs/123456789"), 404, "not-found")
    assert_problem(admin.get(f"/api/v1/ingestions/{ingestion['id']}/files/987654"), 404, "not-found")
    assert_problem(admin.get("/api/v1/runs/0"), 422, "invalid-request")
    assert_problem(admin.get("/api/v1/ingestions/99999999999999999999999"), 404, "not-found")
    duplicate = admin.post("/api/v1/ingestions", json={"name": ingestion["name"], **spec()})
    assert_problem(duplicate, 409, "conflict", "already exists")
    # By id or by name: the same ingestion.
    assert admin.get(f"/api/v1/ingestions/{ingestion['name']}").json()["id"] == ingestion["id"]


def test_unknown_path_and_method_are_problems(module_api: InProcessApi, admin: httpx2.Client) -> None:
    missing = admin.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["type"] == "about:blank"
    wrong = admin.put("/api/v1/ingestions")
    assert wrong.status_code == 405 and wrong.headers["content-type"] == "application/problem+json"


def test_patch_pause_resume(admin: httpx2.Client, ingestion: dict[str, Any]) -> None:
    path = f"/api/v1/ingestions/{ingestion['id']}"
    patched = admin.patch(path, json={"max_files_per_commit": 7, "pattern": "**/*.jsonl", "schedule_cron": "0 * * * *"})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["max_files_per_commit"], patched.json()["pattern"]) == (7, "**/*.jsonl")
    assert patched.json()["updated_at"] > ingestion["updated_at"]
    cleared = admin.patch(path, json={"pattern": None, "schedule_cron": None})
    assert (cleared.json()["pattern"], cleared.json()["schedule_cron"]) == (None, None)
    assert_problem(admin.patch(path, json={"source": "s3://other/"}), 422, "invalid-request", "source")
    assert_problem(admin.patch(path, json={"max_retries": None}), 422, "invalid-request", "null")
    assert_problem(admin.patch(path, json={"pattern": "[unclosed"}), 422, "invalid-request")
    assert admin.post(f"{path}/pause").json()["status"] == "PAUSED"
    assert admin.post(f"{path}/resume").json()["status"] == "ACTIVE"


def test_run_in_progress_and_cancel(
    admin: httpx2.Client, operator: httpx2.Client, ingestion: dict[str, Any], db: sa.Engine
) -> None:
    path = f"/api/v1/ingestions/{ingestion['id']}"
    admin.post(f"{path}/pause")  # no worker runs here anyway; a paused ingestion's run waits
    first = operator.post(f"{path}/run")
    assert first.status_code == 202 and first.json()["status"] == "PENDING"
    assert_problem(operator.post(f"{path}/run"), 409, "run-in-progress", str(first.json()["id"]))
    cancelled = operator.post(f"/api/v1/runs/{first.json()['id']}/cancel")
    assert cancelled.status_code == 202
    assert (cancelled.json()["status"], cancelled.json()["finished_at"] is not None) == ("CANCELLED", True)
    assert_problem(operator.post(f"/api/v1/runs/{first.json()['id']}/cancel"), 409, "conflict", "finished")

    # A RUNNING run (as a worker would have claimed it) gets cancel_requested; it keeps running.
    second = operator.post(f"{path}/run").json()
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET status = 'RUNNING' WHERE id = :i"), {"i": second["id"]})
    requested = operator.post(f"/api/v1/runs/{second['id']}/cancel").json()
    assert (requested["status"], requested["cancel_requested"]) == ("RUNNING", True)
    runs = admin.get(f"{path}/runs").json()["items"]
    assert [r["id"] for r in runs] == [second["id"], first.json()["id"]]


def test_delete_refused_while_a_worker_holds_a_lease(
    admin: httpx2.Client, ingestion: dict[str, Any], db: sa.Engine
) -> None:
    path = f"/api/v1/ingestions/{ingestion['id']}"
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO files (ingestion_id, file_path, size, etag, status, lease_owner, lease_expires_at) "
                "VALUES (:i, 's3://landing/orders/a.jsonl', 1, 'e', 'PROCESSING', 'w', now() + interval '1 hour')"
            ),
            {"i": ingestion["id"]},
        )
    assert_problem(admin.delete(path), 409, "conflict", "being processed")
    with db.begin() as conn:
        conn.execute(
            sa.text("UPDATE files SET lease_expires_at = now() - interval '1 second' WHERE ingestion_id = :i"),
            {"i": ingestion["id"]},
        )
    deleted = admin.delete(path)
    assert deleted.status_code == 204 and deleted.content == b""
    assert admin.get(path).status_code == 404


def _add_files(db: sa.Engine, ingestion_id: int, names: range, status: str = "SUCCESS") -> None:
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO files (ingestion_id, file_path, size, etag, status) "
                "SELECT :i, 's3://landing/orders/' || lpad(n::text, 6, '0') || '.jsonl', 10, 'e', :s "
                "FROM generate_series(CAST(:a AS int), CAST(:b AS int)) AS n"
            ),
            {"i": ingestion_id, "a": names.start, "b": names.stop - 1, "s": status},
        )


def test_file_pages_stay_correct_while_files_arrive(
    admin: httpx2.Client, ingestion: dict[str, Any], db: sa.Engine
) -> None:
    path = f"/api/v1/ingestions/{ingestion['id']}/files"
    _add_files(db, ingestion["id"], range(0, 25))
    seen: list[str] = []
    cursor = None
    arrived = 0
    while True:
        page = admin.get(path, params={"limit": 10, **({"cursor": cursor} if cursor else {})}).json()
        seen += [f["file_path"] for f in page["items"]]
        cursor = page["next_cursor"]
        if arrived < 2:  # discovery adds files (after every cursor) while the client pages
            _add_files(db, ingestion["id"], range(100 + arrived * 10, 110 + arrived * 10))
            arrived += 1
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 45
    # Filters combine with the cursor; a bad cursor is a 422, not a 500.
    _add_files(db, ingestion["id"], range(500, 503), status="FAILED")
    failed = admin.get(path, params={"status": "FAILED", "limit": 2}).json()
    assert len(failed["items"]) == 2 and failed["next_cursor"]
    rest = admin.get(path, params={"status": "FAILED", "limit": 2, "cursor": failed["next_cursor"]}).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    prefixed = admin.get(path, params={"path_prefix": "s3://landing/orders/0001"}).json()["items"]
    assert [f["file_path"] for f in prefixed] == [f"s3://landing/orders/{n:06d}.jsonl" for n in range(100, 120)]
    assert_problem(admin.get(path, params={"cursor": "bm9wZQ"}), 422, "invalid-request", "cursor")
    assert_problem(admin.get(path, params={"status": "DONE"}), 422, "invalid-request", "status")
    assert_problem(admin.get(path, params={"modified_since": "yesterday"}), 422, "invalid-request")


def test_ingestion_pages_and_filters(admin: httpx2.Client) -> None:
    prefix = f"page-{uuid.uuid4().hex[:6]}-"
    for n in range(5):
        fmt = "csv" if n % 2 else "jsonl"
        created = admin.post("/api/v1/ingestions", json={**spec(), "name": f"{prefix}{n}", "format": fmt})
        assert created.status_code == 201
    names: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"name_prefix": prefix, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = admin.get("/api/v1/ingestions", params=params).json()
        names += [i["name"] for i in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert names == [f"{prefix}{n}" for n in range(5)]
    csv = admin.get("/api/v1/ingestions", params={"name_prefix": prefix, "format": "csv"}).json()["items"]
    assert [i["name"] for i in csv] == [f"{prefix}1", f"{prefix}3"]


def test_secrets_in_a_source_uri_are_not_returned(admin: httpx2.Client) -> None:
    body = {
        **spec(),
        "name": f"s-{uuid.uuid4().hex[:6]}",
        "source": "s3://AKIAEXAMPLE:wJalrXUtnFEMI@landing/x/",
    }
    created = admin.post("/api/v1/ingestions", json=body)
    assert created.status_code == 201
    assert "wJalrXUtnFEMI" not in created.text and created.json()["source"] == "s3://***@landing/x/"


def test_request_id_cors_and_probes(module_api: InProcessApi, admin: httpx2.Client) -> None:
    echoed = admin.get("/api/v1/ingestions", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    fresh = admin.get("/api/v1/ingestions", headers={"X-Request-ID": "bad id with spaces"})
    assert fresh.headers["x-request-id"] != "bad id with spaces" and len(fresh.headers["x-request-id"]) == 32
    # CORS is off by default: no Access-Control-* header, whatever the Origin.
    with module_api.client() as anonymous:
        preflight = anonymous.options(
            "/api/v1/ingestions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert not any(h.startswith("access-control-") for h in preflight.headers)
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").json() == {
            "status": "ready",
            "checks": {"database": "ok", "catalog": "ok"},
        }
        assert anonymous.get("/metrics").status_code == 401


def test_metrics_public_and_cors_when_configured(make_api: Callable[..., InProcessApi]) -> None:
    configured = ApiSettings.from_env(
        {"ICEFLOE_API_METRICS_PUBLIC": "true", "ICEFLOE_API_CORS_ORIGINS": "https://ui.example"}
    )
    with make_api(configured).client() as anonymous:
        metrics = anonymous.get("/metrics")
        assert metrics.status_code == 200 and "icefloe_api_requests_total" in metrics.text
        allowed = anonymous.get("/healthz", headers={"Origin": "https://ui.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
        other = anonymous.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        # Everything else still needs a token.
        assert anonymous.get("/api/v1/ingestions").status_code == 401


def _request_series(metrics_text: str) -> set[str]:
    return {
        line.rsplit(" ", 1)[0]
        for line in metrics_text.splitlines()
        if line.startswith(("icefloe_api_requests_total{", "icefloe_api_request_duration_seconds_count{"))
    }


def test_metrics_series_are_bounded_whatever_requests_arrive(module_api: InProcessApi, admin: httpx2.Client) -> None:
    before = _request_series(admin.get("/metrics").text)
    rng = random.Random(18)
    sent: list[str] = []
    with module_api.client() as anonymous:  # no token, as an attacker
        for i in range(30):
            method = "".join(rng.choices(string.ascii_uppercase, k=8)) if i % 2 else "GET"
            path = f"/{uuid.uuid4().hex}" if i % 3 else f"/api/v1/runs/{rng.randint(1, 10**9)}"
            anonymous.request(method, path)
            sent += [method, path]
    added = _request_series(admin.get("/metrics").text) - before
    # {GET, other} x {unmatched, /api/v1/runs/{run_id}}, each a latency series and a counter per
    # status (401, 404 or 405): at most 12 new series, where raw labels made 60.
    assert 0 < len(added) <= 12, sorted(added)
    labels = " ".join(added)
    assert 'method="other"' in labels and 'route="unmatched"' in labels
    assert not [value for value in sent if f'"{value}"' in labels and value != "GET"], sorted(added)


def test_an_ingestion_made_by_the_cli_is_the_same_as_one_made_by_the_api(
    module_env: dict[str, str], admin: httpx2.Client
) -> None:
    options: dict[str, str | int] = {
        "source": "s3://landing/twins/",
        "format": "csv",
        "table": "shop.twins",
        "pattern": "**/*.csv",
        "since": "2025-01-01T00:00:00+00:00",
        "max_files_per_commit": 9,
        "max_retries": 5,
        "csv_delimiter": ";",
        "schedule_cron": "*/5 * * * *",
    }
    cli_args = [f"--{k.replace('_', '-')}={v}" for k, v in options.items() if k != "schedule_cron"]
    cli = subprocess.run(
        [
            "icefloe",
            "ingestion",
            "create",
            "cli-twin",
            *cli_args,
            "--schedule",
            str(options["schedule_cron"]),
            "--json",
        ],
        env=module_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    # Both at once would overlap (one table, one source): the twin is made once the first is gone.
    overlapping = admin.post("/api/v1/ingestions", json={"name": "api-twin", **options})
    assert_problem(overlapping, 409, "conflict", "'cli-twin' already writes table shop.twins")
    by_cli = admin.get("/api/v1/ingestions/cli-twin").json()
    assert admin.delete("/api/v1/ingestions/cli-twin").status_code == 204
    assert admin.post("/api/v1/ingestions", json={"name": "api-twin", **options}).status_code == 201
    by_api = admin.get("/api/v1/ingestions/api-twin").json()
    different = {"id", "name", "created_at", "updated_at"}
    assert {k: v for k, v in by_cli.items() if k not in different} == {
        k: v for k, v in by_api.items() if k not in different
    }
