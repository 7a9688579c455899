"""The incremental listing over HTTP: the `listing` field of an ingestion, a run triggered with
`{"full_listing": true}`, and the LIST requests every run object reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.api import ApiServer, poll_run

if TYPE_CHECKING:
    from tests.support.services import PutObjects


pytestmark = pytest.mark.server  # a real `icefloe serve --with-worker`


def test_incremental_ingestion_and_a_full_listing_triggered_over_http(
    start_server: Callable[..., ApiServer], bucket: str, put_objects: PutObjects
) -> None:
    api = start_server(with_worker=True)
    with api.client("admin") as admin, api.client("operator") as operator, api.client("reader") as reader:
        _incremental_story(admin, operator, reader, bucket, put_objects)


def _incremental_story(
    admin: httpx.Client, operator: httpx.Client, reader: httpx.Client, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"in/b.jsonl": b'{"id": 2}\n'})
    created = admin.post(
        "/api/v1/ingestions",
        json={"name": "inc", "source": f"s3://{bucket}/in/", "format": "jsonl", "table": "api.inc"}
        | {"listing": "incremental", "relist_lookback_seconds": 172800},
    )
    assert created.status_code == 201, created.text
    assert (created.json()["listing"], created.json()["full_listing_every_seconds"]) == ("incremental", 86400)
    base = f"/api/v1/ingestions/{created.json()['id']}"

    first = poll_run(reader, operator.post(f"{base}/run").headers["location"])
    assert (first["listing"], first["list_requests"], first["files_succeeded"]) == ("full", 1, 1)
    assert reader.get(base).json()["listing_watermark"] == "in/b.jsonl"

    put_objects(bucket, {"in/a.jsonl": b'{"id": 1}\n'})  # below the watermark
    steady = poll_run(reader, operator.post(f"{base}/run", json={}).headers["location"])
    assert (steady["listing"], steady["files_new"], steady["files_missed_by_incremental"]) == ("incremental", 0, 0)

    triggered = operator.post(f"{base}/run", json={"full_listing": True})
    assert triggered.status_code == 202, triggered.text
    full = poll_run(reader, triggered.headers["location"])
    assert (full["listing"], full["files_new"], full["files_missed_by_incremental"]) == ("full", 1, 1)

    assert operator.post(f"{base}/run", json={"full_listing": "yes please"}).status_code == 422
    patched = admin.patch(base, json={"listing": "full", "relist_lookback_seconds": None})
    assert (patched.json()["listing"], patched.json()["relist_lookback_seconds"]) == ("full", None)
