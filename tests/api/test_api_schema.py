"""Schema changes over HTTP against `icefloe serve --with-worker` and a second `icefloe worker`:
pending changes, approve (operator), reject, and the history naming the token that approved."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.api import ApiServer, poll_run
from tests.support.processes import Proc, Processes
from tests.support.services import PutObjects
from tests.support.tables import default_catalog, ids_by_file, jsonl

pytestmark = pytest.mark.server


@dataclass
class OneWorker(Processes):
    env: dict[str, str]
    tmp_path: Path
    procs: list[Proc] = field(default_factory=list)


@pytest.fixture
def second_worker(icefloe_env: dict[str, str], tmp_path: Path) -> Iterator[OneWorker]:
    procs = OneWorker(icefloe_env, tmp_path)
    try:
        yield procs
    finally:
        procs.close_processes()


def test_pending_approve_reject_and_history_over_http_with_two_workers(
    start_server: Callable[..., ApiServer],
    icefloe_env: dict[str, str],
    bucket: str,
    put_objects: PutObjects,
    second_worker: OneWorker,
) -> None:
    api = start_server(with_worker=True)
    helper = second_worker.start_worker(lease=10)
    second_worker.wait_started(helper)
    with api.client("admin") as admin, api.client("operator") as operator, api.client("reader") as reader:
        _story(admin, operator, reader, icefloe_env, bucket, put_objects)
    assert second_worker.stop_worker(helper) == 0


def _story(
    admin: httpx.Client,
    operator: httpx.Client,
    reader: httpx.Client,
    icefloe_env: dict[str, str],
    bucket: str,
    put_objects: PutObjects,
) -> None:
    created = admin.post(
        "/api/v1/ingestions",
        json={
            "name": "gated",
            "source": f"s3://{bucket}/in/",
            "format": "jsonl",
            "table": "api.gated",
            "schema_evolution": "approve",
            "max_files_per_commit": 1,
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["schema_evolution"] == "approve"
    base = f"/api/v1/ingestions/{created.json()['id']}"

    def run() -> str:
        triggered = operator.post(f"{base}/run")
        assert triggered.status_code == 202, triggered.text
        return str(poll_run(reader, triggered.headers["location"])["status"])

    put_objects(bucket, {"in/1.jsonl": jsonl([{"id": 1}])})
    assert run() == "SUCCESS"
    put_objects(
        bucket,
        {
            "in/2.jsonl": jsonl([{"id": 2, "tier": 1}]),
            "in/3.jsonl": jsonl([{"id": 3, "tier": 2}]),
            "in/4.jsonl": jsonl([{"id": 4}]),
        },
    )
    assert run() == "SUCCESS"
    held = reader.get(f"{base}/files", params={"status": "HELD"}).json()["items"]
    assert sorted(f["file_path"] for f in held) == [f"s3://{bucket}/in/2.jsonl", f"s3://{bucket}/in/3.jsonl"]
    assert {f["error_type"] for f in held} == {"SchemaChangePending"}

    pending = reader.get(f"{base}/schema/pending")
    assert pending.status_code == 200, pending.text
    (change,) = pending.json()
    assert change["files"] == 2 and change["change"]["added"] == [{"name": "tier", "type": "long"}]
    catalog = default_catalog(icefloe_env)
    try:
        assert sorted(catalog.load_table("api.gated").scan().to_arrow().column("id").to_pylist()) == [1, 4]

        assert reader.post(f"{base}/schema/pending/{change['id']}/approve").status_code == 403
        approved = operator.post(f"{base}/schema/pending/{change['id']}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["decided_by"] == "test-operator" and approved.json()["files"] == 2
        assert operator.post(f"{base}/schema/pending/{change['id']}/approve").status_code == 409
        assert operator.post(f"{base}/schema/pending/999999/reject").status_code == 404
        assert run() == "SUCCESS"
        table = catalog.load_table("api.gated")
        assert ids_by_file(table.scan().to_arrow()) == {f"s3://{bucket}/in/{n}.jsonl": [n] for n in range(1, 5)}

        history = reader.get(f"{base}/schema/history").json()
        assert [(v["status"], v["approved_by"]) for v in history] == [("CREATED", None), ("APPROVED", "test-operator")]
        assert history[-1]["schema_id"] == table.schema().schema_id
        assert history[-1]["file"] == change["first_file"]

        put_objects(bucket, {"in/5.jsonl": jsonl([{"id": 5, "note": "x"}])})
        assert run() == "SUCCESS"
        (change,) = reader.get(f"{base}/schema/pending").json()
        rejected = operator.post(f"{base}/schema/pending/{change['id']}/reject")
        assert rejected.status_code == 200 and rejected.json()["status"] == "REJECTED"
        (failed,) = reader.get(f"{base}/files", params={"status": "FAILED"}).json()["items"]
        assert failed["error_type"] == "SchemaRejected"
        assert failed["error_message"].endswith("rejected by test-operator: adds note (string)")
        assert "note" not in catalog.load_table("api.gated").schema().column_names
    finally:
        catalog.engine.dispose()
