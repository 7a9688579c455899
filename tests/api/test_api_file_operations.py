"""The per-file operations over HTTP: the same functions as `icefloe files retry|skip|reingest`,
an operator's token required, the file's state after the action returned."""

from __future__ import annotations

from collections.abc import Callable

from icefloe import ingestions, ledger, worker
from icefloe.ingestions import IngestionSpec
from icefloe.runtime import Runtime
from tests.support.api import InProcessApi
from tests.support.services import PutObjects
from tests.support.tables import jsonl


def test_operator_retries_skips_and_reingests_one_file(
    make_api: Callable[..., InProcessApi], rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"in/a.jsonl": jsonl([{"id": 1}]), "in/b.jsonl": b"{not json\n", "in/c.jsonl": b"[\n"})
    ingestions.create(rt.db, IngestionSpec(name="ops", source=f"s3://{bucket}/in/", format="jsonl", table="api.ops"))
    worker.run_ingestion(rt, ingestions.get(rt.db, "ops"), trigger="test")
    api = make_api()
    with api.client("reader") as reader, api.client("operator") as operator:
        by_path = {f["file_path"]: f for f in reader.get("/api/v1/ingestions/ops/files").json()["items"]}
        a, b, c = (by_path[f"s3://{bucket}/in/{k}.jsonl"]["id"] for k in "abc")
        base = "/api/v1/ingestions/ops/files"

        assert reader.post(f"{base}/{b}/retry").status_code == 403  # a reader may look, not act
        retried = operator.post(f"{base}/{b}/retry")
        assert retried.status_code == 200, retried.text
        assert (retried.json()["status"], retried.json()["retry_count"]) == ("DISCOVERED", 0)

        skipped = operator.post(f"{base}/{c}/skip", json={"reason": "empty array from <legacy> producer"})
        assert skipped.status_code == 200, skipped.text
        body = skipped.json()
        assert (body["status"], body["error_message"]) == ("SKIPPED", "empty array from <legacy> producer")
        assert operator.post(f"{base}/{a}/skip", json={"reason": "x"}).status_code == 409  # SUCCESS: in the table
        assert operator.post(f"{base}/{a}/skip", json={}).status_code == 422  # a reason is required

        reingested = operator.post(f"{base}/{a}/reingest")
        assert reingested.status_code == 200, reingested.text
        assert (reingested.json()["status"], reingested.json()["version"]) == ("DISCOVERED", 2)
        conflict = operator.post(f"{base}/{a}/reingest")
        assert conflict.status_code == 409 and "already waiting" in conflict.json()["detail"]
        assert operator.post(f"{base}/999999/retry").status_code == 404

    with rt.db.connect() as conn:  # the history says who did it
        history = [(h["worker_id"], h["status"]) for h in ledger.attempts(conn, int(str(c)))]
    assert ("operator test-operator", "SKIPPED") in history
