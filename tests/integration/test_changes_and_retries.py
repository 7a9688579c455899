"""A file that changes in S3, and a FAILED file that is fixed or retried: its rows end up once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from icefloe.errors import PermanentFileError
from icefloe.runtime import Runtime
from tests.support.cli import cli
from tests.support.inprocess import files, ingest, run
from tests.support.tables import icefloe_snapshots, ids_by_file, jsonl, load_table, rows

if TYPE_CHECKING:
    from tests.support.services import PutObjects


@pytest.mark.parametrize("on_change", ["replace", "append"])
def test_modified_file_under_on_change(rt: Runtime, bucket: str, put_objects: PutObjects, on_change: str) -> None:
    changing, stable = f"s3://{bucket}/in/changing.jsonl", f"s3://{bucket}/in/stable.jsonl"
    put_objects(
        bucket,
        {"in/changing.jsonl": jsonl([{"id": 1}, {"id": 2}, {"id": 3}]), "in/stable.jsonl": jsonl([{"id": 10}])},
    )
    ingest(rt, "chg", f"s3://{bucket}/in/", on_change=on_change)
    first = run(rt, "chg")
    assert first.status == "SUCCESS", first.error_message
    etag_before = files(rt, "chg")[changing]["etag"]

    put_objects(bucket, {"in/changing.jsonl": jsonl([{"id": 4}, {"id": 5}])})  # new content, new ETag
    second = run(rt, "chg")

    assert second.status == "SUCCESS", second.error_message
    assert (second.files_new, second.files_changed, second.files_succeeded) == (0, 1, 1)
    assert second.records_ingested == 2
    ledger = files(rt, "chg")
    assert ledger[changing]["etag"] != etag_before
    assert ledger[changing]["status"] == "SUCCESS"
    assert ledger[changing]["version"] == 2
    by_file = ids_by_file(rows(rt, "it.chg"))
    if on_change == "replace":
        assert by_file == {changing: [4, 5], stable: [10]}
    else:
        assert by_file == {changing: [1, 2, 3, 4, 5], stable: [10]}
    # the change's commit(s) carry icefloe's properties too (replace: a delete and an append)
    summaries = icefloe_snapshots(load_table(rt, "it.chg"))
    assert all(p.get("icefloe.batch-id") and p.get("icefloe.run-id") for p in summaries)
    assert {p["icefloe.run-id"] for p in summaries} == {str(first.id), str(second.id)}

    third = run(rt, "chg")  # nothing changed since: nothing happens
    assert (third.files_new, third.files_changed, third.snapshots_committed) == (0, 0, 0)
    assert len(load_table(rt, "it.chg").metadata.snapshots) == len(summaries)


def test_failed_file_fixed_in_s3_is_ingested_once(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    bad = f"s3://{bucket}/in/b.jsonl"
    put_objects(bucket, {"in/a.jsonl": jsonl([{"id": 1}]), "in/b.jsonl": b'{"id": 2\n{"id": 3}\n'})
    ingest(rt, "fix", f"s3://{bucket}/in/")
    first = run(rt, "fix")
    assert first.status == "PARTIAL"
    assert files(rt, "fix")[bad]["status"] == "FAILED"
    assert ids_by_file(rows(rt, "it.fix")) == {f"s3://{bucket}/in/a.jsonl": [1]}

    put_objects(bucket, {"in/b.jsonl": jsonl([{"id": 2}, {"id": 3}])})
    second = run(rt, "fix")

    assert second.status == "SUCCESS", second.error_message
    assert (second.files_changed, second.files_succeeded, second.files_failed) == (1, 1, 0)
    entry = files(rt, "fix")[bad]
    assert entry["status"] == "SUCCESS"
    assert entry["error_type"] is None and entry["error_message"] is None
    assert entry["records_ingested"] == 2
    assert sorted(rows(rt, "it.fix").column("id").to_pylist()) == [1, 2, 3]
    assert run(rt, "fix").files_succeeded == 0


def test_retry_command_makes_failed_files_eligible_now(
    rt: Runtime, icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files that failed for a cause outside their content (here: access denied, since granted) wait
    out their backoff; ``icefloe retry`` makes them eligible at once, one by --path or all."""
    keys = ["in/a.jsonl", "in/b.jsonl", "in/c.jsonl"]
    put_objects(bucket, {k: jsonl([{"id": n}]) for n, k in enumerate(keys)})
    denied = {f"s3://{bucket}/in/b.jsonl", f"s3://{bucket}/in/c.jsonl"}
    real_read = rt.objects.read

    def read(uri: str, etag: str) -> Any:
        if uri in denied:
            raise PermanentFileError(f"access denied reading {uri} (HTTP 403)", error_type="AccessDenied")
        return real_read(uri, etag)

    monkeypatch.setattr(rt.objects, "read", read)
    ingest(rt, "retry", f"s3://{bucket}/in/")
    first = run(rt, "retry")
    assert first.status == "PARTIAL"
    assert (first.files_succeeded, first.files_failed) == (1, 2)
    failed = files(rt, "retry", status="FAILED")
    assert set(failed) == denied
    assert {f["error_type"] for f in failed.values()} == {"AccessDenied"}

    denied.clear()  # access granted again
    waiting = run(rt, "retry")  # still in backoff: nothing is tried
    assert (waiting.files_succeeded, waiting.files_failed) == (0, 0)
    assert set(files(rt, "retry", status="FAILED")) == {f"s3://{bucket}/in/b.jsonl", f"s3://{bucket}/in/c.jsonl"}

    out = cli(icefloe_env, "retry", "retry", "--path", "in/b.jsonl")
    assert "1 file" in out.stdout
    second = run(rt, "retry")
    assert (second.status, second.files_succeeded, second.files_failed) == ("SUCCESS", 1, 0)
    assert set(files(rt, "retry", status="FAILED")) == {f"s3://{bucket}/in/c.jsonl"}

    cli(icefloe_env, "retry", "retry")
    third = run(rt, "retry")
    assert (third.status, third.files_succeeded, third.files_failed) == ("SUCCESS", 1, 0)
    assert {f["status"] for f in files(rt, "retry").values()} == {"SUCCESS"}
    assert sorted(rows(rt, "it.retry").column("id").to_pylist()) == [0, 1, 2]  # each once
