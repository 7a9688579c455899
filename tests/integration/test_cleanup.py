"""Source clean-up after ingestion (--after-ingest) against real SeaweedFS and PostgreSQL: delete,
move and tag; the delay; a dry run; a file changed since it was ingested left in place as a FAILED
clean-up with an alert, never re-ingested as the old version; cleaned files never ingested again."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from icefloe import alerts, cleanup, daemon, file_operations, ingestions
from icefloe.errors import ConfigurationError, ConflictError
from icefloe.runtime import Runtime
from tests.support.inprocess import files, ingest, run
from tests.support.tables import jsonl, rows

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.support.services import PutObjects


def keys(s3_client: S3Client, bucket: str, prefix: str) -> list[str]:
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def seed(put_objects: PutObjects, bucket: str, n: int = 5) -> None:
    put_objects(bucket, {f"in/d/{i}.jsonl": jsonl([{"id": i}]) for i in range(n)})


def clean(rt: Runtime, name: str, *, dry_run: bool = False) -> cleanup.CleanupReport:
    return cleanup.clean(rt.db, rt.catalog, rt.s3, ingestions.get(rt.db, name), dry_run=dry_run)


def test_delete_after_ingest_keeps_the_ledger_row_and_never_ingests_again(
    rt: Runtime, bucket: str, put_objects: PutObjects, s3_client: S3Client
) -> None:
    seed(put_objects, bucket)
    ingest(rt, "del", f"s3://{bucket}/in/", after_ingest="delete", after_ingest_delay_seconds=0)
    assert run(rt, "del").files_succeeded == 5

    preview = clean(rt, "del", dry_run=True)
    assert sorted(f["file_path"] for f in preview.files) == [f"s3://{bucket}/in/d/{i}.jsonl" for i in range(5)]
    assert len(keys(s3_client, bucket, "in/")) == 5  # a dry run changes nothing

    report = clean(rt, "del")
    assert (report.cleaned, report.failed) == (5, 0)
    assert keys(s3_client, bucket, "in/") == []
    ledger = files(rt, "del")
    assert {(r["status"], r["cleanup_status"], r["cleanup_error"]) for r in ledger.values()} == {
        ("SUCCESS", "DONE", None)
    }
    assert all(r["cleanup_at"] is not None for r in ledger.values())

    with pytest.raises(ConflictError, match="cleaned up from the source"):  # nothing left to read
        file_operations.reingest_file(rt.db, ingestions.get(rt.db, "del"), "d/0.jsonl", actor="test")
    again = run(rt, "del")  # the vanished keys are neither new nor changed
    assert (again.files_discovered, again.files_new, again.files_succeeded) == (0, 0, 0)
    assert clean(rt, "del").cleaned == 0  # nothing left to do
    assert sorted(rows(rt, "it.del").column("id").to_pylist()) == list(range(5))


def test_move_after_ingest_lands_every_file_outside_the_source(
    rt: Runtime, bucket: str, put_objects: PutObjects, s3_client: S3Client
) -> None:
    seed(put_objects, bucket)
    ingest(rt, "mv", f"s3://{bucket}/in/", after_ingest=f"move:s3://{bucket}/archive/", after_ingest_delay_seconds=0)
    run(rt, "mv")
    preview = clean(rt, "mv", dry_run=True)
    assert {f["destination"] for f in preview.files} == {f"s3://{bucket}/archive/d/{i}.jsonl" for i in range(5)}

    assert clean(rt, "mv").cleaned == 5
    assert keys(s3_client, bucket, "in/") == []
    assert keys(s3_client, bucket, "archive/") == [f"archive/d/{i}.jsonl" for i in range(5)]
    body = s3_client.get_object(Bucket=bucket, Key="archive/d/3.jsonl")["Body"].read()
    assert body == jsonl([{"id": 3}])
    assert run(rt, "mv").files_new == 0
    assert sorted(rows(rt, "it.mv").column("id").to_pylist()) == list(range(5))


def test_tag_after_ingest_leaves_the_file_and_its_etag(
    rt: Runtime, bucket: str, put_objects: PutObjects, s3_client: S3Client
) -> None:
    seed(put_objects, bucket, 2)
    ingest(rt, "tag", f"s3://{bucket}/in/", after_ingest="tag:ingested=yes", after_ingest_delay_seconds=0)
    run(rt, "tag")
    assert clean(rt, "tag").cleaned == 2
    tags = s3_client.get_object_tagging(Bucket=bucket, Key="in/d/1.jsonl")["TagSet"]
    assert {"Key": "ingested", "Value": "yes"} in tags
    assert run(rt, "tag").files_changed == 0


def test_only_files_past_the_delay_are_cleaned(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    seed(put_objects, bucket, 2)
    ingest(rt, "wait", f"s3://{bucket}/in/", after_ingest="delete", after_ingest_delay_seconds=3600)
    run(rt, "wait")
    assert clean(rt, "wait", dry_run=True).files == []
    assert clean(rt, "wait").cleaned == 0


def test_a_file_changed_since_ingestion_is_left_in_place_a_failed_cleanup_and_an_alert(
    rt: Runtime, bucket: str, put_objects: PutObjects, s3_client: S3Client
) -> None:
    seed(put_objects, bucket, 2)
    ingest(rt, "chg", f"s3://{bucket}/in/", after_ingest="delete", after_ingest_delay_seconds=0, on_change="replace")
    run(rt, "chg")
    put_objects(bucket, {"in/d/1.jsonl": jsonl([{"id": 100}])})  # a new version, not yet discovered

    report = clean(rt, "chg")
    assert (report.cleaned, report.failed) == (1, 1)
    assert keys(s3_client, bucket, "in/") == ["in/d/1.jsonl"]  # the newer version is not deleted
    row = files(rt, "chg")[f"s3://{bucket}/in/d/1.jsonl"]
    assert (row["status"], row["cleanup_status"]) == ("SUCCESS", "FAILED")
    assert "changed since it was ingested" in str(row["cleanup_error"])
    assert alerts.detect(rt.db) >= 1
    assert any(a["kind"] == "cleanup_failed" for a in alerts.list_recent(rt.db))

    again = run(rt, "chg")  # the new version is ingested as such; its clean-up starts afresh
    assert (again.files_changed, again.files_succeeded) == (1, 1)
    assert files(rt, "chg")[f"s3://{bucket}/in/d/1.jsonl"]["cleanup_status"] is None
    assert sorted(rows(rt, "it.chg").column("id").to_pylist()) == [0, 100]
    assert clean(rt, "chg").cleaned == 1
    assert keys(s3_client, bucket, "in/") == []


def test_a_move_into_the_source_is_refused(rt: Runtime, bucket: str) -> None:
    for target in (f"move:s3://{bucket}/in/done/", "move:in/done/", f"move:s3://{bucket}/"):
        with pytest.raises(ConfigurationError, match="overlaps the source"):
            ingest(rt, "bad", f"s3://{bucket}/in/", after_ingest=target)
    with pytest.raises(ConfigurationError, match="after-ingest must be"):
        ingest(rt, "bad", f"s3://{bucket}/in/", after_ingest="shred")


def test_a_worker_cleans_up_when_due(rt: Runtime, bucket: str, put_objects: PutObjects, s3_client: S3Client) -> None:
    seed(put_objects, bucket, 3)
    ingest(rt, "wrk", f"s3://{bucket}/in/", after_ingest="delete", after_ingest_delay_seconds=0)
    run(rt, "wrk")
    daemon.WorkerProcess(rt).cleanup_due()
    assert keys(s3_client, bucket, "in/") == []
    assert {r["cleanup_status"] for r in files(rt, "wrk").values()} == {"DONE"}


def test_workers_take_a_due_cleanup_once(rt: Runtime, bucket: str) -> None:
    ingest(rt, "due", f"s3://{bucket}/in/", after_ingest="delete", after_ingest_delay_seconds=0)
    ingest(rt, "kept", f"s3://{bucket}/other/")
    due = ingestions.get(rt.db, "due").id
    assert cleanup.take_due_cleanups(rt.db) == [due]
    assert cleanup.take_due_cleanups(rt.db) == []  # the next pass is an interval away, for every worker
