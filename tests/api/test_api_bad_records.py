"""Bad records over HTTP: ``on_bad_record`` and ``max_bad_records`` on ingestions, counters on files
and runs, and ``POST …/validate`` (a reader's dry run)."""

from __future__ import annotations

from collections.abc import Callable

from icefloe import ingestions, worker
from icefloe.runtime import Runtime
from tests.support.api import InProcessApi
from tests.support.services import PutObjects


def test_policy_counters_and_validate_through_the_api(
    make_api: Callable[..., InProcessApi], rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"in/a.jsonl": b'{"id": 1}\n{"id": \n{"id": 2}\n'})
    api = make_api()
    body = {"name": "br", "source": f"s3://{bucket}/in/", "format": "jsonl", "table": "api.br"}
    with api.client("admin") as admin, api.client("reader") as reader:
        bad = admin.post("/api/v1/ingestions", json=body | {"on_bad_record": "sometimes"})
        assert bad.status_code == 422
        refused = admin.post("/api/v1/ingestions", json=body | {"max_bad_records": "5%"})
        assert refused.status_code == 422 and "--on-bad-record" in refused.json()["detail"], refused.text
        created = admin.post("/api/v1/ingestions", json=body | {"on_bad_record": "skip", "max_bad_records": "50%"})
        assert created.status_code == 201, created.text
        assert (created.json()["on_bad_record"], created.json()["max_bad_records"]) == ("skip", "50%")

        validated = reader.post("/api/v1/ingestions/br/validate")
        assert validated.status_code == 200, validated.text
        [report] = validated.json()["items"]
        assert (report["status"], report["records"], report["bad_records"], report["verdict"]) == (
            "NEW",
            2,
            1,
            "skipped",
        )

        run_id = worker.run_ingestion(rt, ingestions.get(rt.db, "br"), trigger="test").id
        run = reader.get(f"/api/v1/runs/{run_id}")
        assert run.status_code == 200, run.text
        assert (run.json()["records_ingested"], run.json()["records_rejected"]) == (2, 1)
        [file] = reader.get("/api/v1/ingestions/br/files").json()["items"]
        assert (file["records_ingested"], file["records_rejected"]) == (2, 1)
        changed = admin.patch("/api/v1/ingestions/br", json={"on_bad_record": "quarantine", "max_bad_records": None})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["on_bad_record"], changed.json()["max_bad_records"]) == ("quarantine", None)
