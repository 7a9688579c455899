"""The whole story over HTTP against ``icefloe serve --with-worker``: define an ingestion, trigger a
run, poll it until it is done, list its files, retry the failed one, and read the Iceberg table.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from icefloe import tables
from icefloe.settings import Settings
from tests.support.api import ApiServer, poll_run
from tests.support.services import PutObjects

pytestmark = pytest.mark.server


RUN_TIMEOUT = 300.0


def jsonl(ids: range) -> bytes:
    return "".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in ids).encode()


def all_files(client: httpx.Client, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get(path, params={"limit": limit, **params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def test_create_trigger_poll_list_retry_and_read_the_table(
    start_server: Callable[..., ApiServer],
    icefloe_env: dict[str, str],
    bucket: str,
    put_objects: PutObjects,
    database_url: str,
) -> None:
    api = start_server(with_worker=True)
    # An admin token through the CLI, as an operator would make the first one.
    cli = subprocess.run(
        ["icefloe", "token", "create", "--name", "story-admin", "--role", "admin", "--json"],
        env=icefloe_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    printed = json.loads(cli.stdout)
    assert set(printed) == {"name", "role", "token"} and printed["role"] == "admin"
    admin = api.client(token=printed["token"])
    operator, reader = api.client("operator"), api.client("reader")

    good = {f"events/2025/01/part-{n}.jsonl": jsonl(range(n * 10, n * 10 + 10)) for n in range(5)}
    put_objects(bucket, good | {"events/2025/01/bad.jsonl": b'{"id": 1000}\n{"id": \n'})

    created = admin.post(
        "/api/v1/ingestions",
        json={
            "name": "story",
            "source": f"s3://{bucket}/events/",
            "format": "jsonl",
            "table": "story.events",
            "max_files_per_commit": 2,
        },
    )
    assert created.status_code == 201, created.text
    ingestion = created.json()
    assert created.headers["location"] == f"/api/v1/ingestions/{ingestion['id']}"
    assert reader.get(created.headers["location"]).json()["name"] == "story"
    base = f"/api/v1/ingestions/{ingestion['id']}"

    # Trigger: 202, the run queued (or already taken by the in-process worker), Location to poll.
    triggered = operator.post(f"{base}/run")
    assert triggered.status_code == 202, triggered.text
    assert triggered.json()["status"] in ("PENDING", "RUNNING")
    assert triggered.json()["trigger"] == "api"
    location = triggered.headers["location"]
    assert location == f"/api/v1/runs/{triggered.json()['id']}"
    run = poll_run(reader, location)
    assert run["status"] == "PARTIAL", run
    assert (run["files_succeeded"], run["files_failed"], run["records_ingested"]) == (5, 1, 50)
    assert run["files_discovered"] == 6 and run["finished_at"] is not None
    assert reader.get(f"{base}/runs").json()["items"][0]["id"] == run["id"]

    # The ledger, a page of two at a time: every file once, in id order.
    files = all_files(reader, f"{base}/files", limit=2)
    assert len(files) == 6 and [f["id"] for f in files] == sorted(f["id"] for f in files)
    assert {f["file_path"] for f in files} == {f"s3://{bucket}/{k}" for k in [*good, "events/2025/01/bad.jsonl"]}
    failed = reader.get(f"{base}/files", params={"status": "FAILED"}).json()["items"]
    assert [f["file_path"] for f in failed] == [f"s3://{bucket}/events/2025/01/bad.jsonl"]
    assert failed[0]["error_type"] and failed[0]["retry_count"] == 1
    one = reader.get(f"{base}/files/{failed[0]['id']}")
    assert one.status_code == 200 and one.json() == failed[0]
    by_prefix = reader.get(f"{base}/files", params={"path_prefix": "events/2025/01/part-"}).json()["items"]
    assert len(by_prefix) == 5 and all(f["status"] == "SUCCESS" for f in by_prefix)
    processed = reader.get(f"{base}/files", params={"processed_since": "2000-01-01T00:00:00Z"}).json()
    assert len(processed["items"]) == 6
    assert reader.get(f"{base}/files", params={"modified_until": "2000-01-01T00:00:00Z"}).json()["items"] == []
    assert reader.get(base).json()["files"] == {"SUCCESS": 5, "FAILED": 1}

    # Retry: readers may not, operators may; the file is claimable again with a fresh budget.
    assert reader.post(f"{base}/files/retry", json={}).status_code == 403
    retried = operator.post(f"{base}/files/retry", json={"path": "events/2025/01/bad.jsonl"})
    assert retried.status_code == 200 and retried.json() == {"retried": 1}
    again = reader.get(f"{base}/files/{failed[0]['id']}").json()
    assert (again["status"], again["retry_count"]) == ("DISCOVERED", 0)
    # The next run tries it again (still corrupt: FAILED once more); nothing else is read twice.
    second = poll_run(reader, operator.post(f"{base}/run").headers["location"])
    assert (second["status"], second["files_failed"], second["files_succeeded"]) == ("PARTIAL", 1, 0)
    assert reader.get(f"{base}/files/{failed[0]['id']}").json()["retry_count"] == 1

    # The Iceberg table holds each good row once, with its source file.
    catalog = tables.load(Settings.from_env(icefloe_env), database_url)
    table = catalog.load_table("story.events").scan().to_arrow()
    assert sorted(table.column("id").to_pylist()) == list(range(50))
    assert set(table.column("_source_file").to_pylist()) == {f"s3://{bucket}/{k}" for k in good}
    engine = getattr(catalog, "engine", None)
    if isinstance(engine, sa.Engine):
        engine.dispose()

    # Metrics: the API's own, the ledger gauges.
    metrics = reader.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'icefloe_api_requests_total{method="POST",route="/api/v1/ingestions/{ingestion_id}/run",status="202"}' in (
        metrics.text
    )
    assert 'icefloe_files{ingestion="story",status="SUCCESS"} 5.0' in metrics.text

    for client in (admin, operator, reader):
        client.close()
    # Graceful shutdown: exit 0; the log has request ids and never a token.
    assert api.stop() == 0
    log = api.log_text()
    assert '"request_id"' in log and "POST /api/v1/ingestions/1/run 202" in log
    for secret in [printed["token"], *api.tokens.values()]:
        assert secret not in log
