"""A run's final status tells the truth about the files it claimed."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

from icefloe import engines, ledger, runs, tables, worker
from icefloe.runtime import Runtime
from tests.support.inprocess import claim, commit_staged, files, ingest
from tests.support.tables import jsonl, load_table

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def test_a_run_with_a_file_still_processing_is_not_a_success(rt: Runtime, bucket: str) -> None:
    ingestion = ingest(rt, "truth", f"s3://{bucket}/in/", max_files_per_commit=1)
    run = runs.start(rt.db, ingestion.id, trigger="test", worker_id=rt.settings.worker_id)
    with rt.db.begin() as conn:
        ledger.upsert_listing_page(
            conn, ingestion.id, [ledger.ListedObject(f"s3://{bucket}/in/0.jsonl", 10, None, "etag-0")]
        )
        # A batch of the run whose worker then vanished: its file stays PROCESSING until the lease expires.
        batch = ledger.claim_batch(
            conn,
            ingestion_id=ingestion.id,
            run_id=run.id,
            owner="helper-that-died",
            lease_seconds=600,
            max_files=1,
            max_bytes=1 << 30,
            max_retries=3,
        )
    assert batch is not None
    settled = runs.settle(rt.db, ingestion.id, run.id, worker_id=rt.settings.worker_id)
    assert settled.status == "PARTIAL"
    assert (
        settled.error_message is not None
        and "1 file(s) claimed by this run are still PROCESSING" in settled.error_message
    )


def test_a_run_whose_files_all_settled_is_a_success(rt: Runtime, bucket: str) -> None:
    ingestion = ingest(rt, "settled", f"s3://{bucket}/in/")
    run = runs.start(rt.db, ingestion.id, trigger="test", worker_id=rt.settings.worker_id)
    settled = runs.settle(rt.db, ingestion.id, run.id, worker_id=rt.settings.worker_id)
    assert (settled.status, settled.error_message) == ("SUCCESS", None)


def test_the_run_that_records_a_lost_file_failed_reports_it(rt: Runtime, bucket: str) -> None:
    ingestion = ingest(rt, "lost", f"s3://{bucket}/in/", max_retries=1)
    crashed = runs.start(rt.db, ingestion.id, trigger="test", worker_id="crashed-worker")
    with rt.db.begin() as conn:
        ledger.upsert_listing_page(
            conn, ingestion.id, [ledger.ListedObject(f"s3://{bucket}/in/gone.jsonl", 10, None, "etag-0")]
        )
        batch = ledger.claim_batch(
            conn,
            ingestion_id=ingestion.id,
            run_id=crashed.id,
            owner="crashed-worker",
            lease_seconds=1,
            max_files=1,
            max_bytes=1 << 30,
            max_retries=1,
        )
    assert batch is not None
    deadline = time.monotonic() + 30
    while True:  # the crashed worker's lease runs out (by the database clock)
        with rt.db.connect() as conn:
            if conn.execute(sa.text("SELECT bool_and(lease_expires_at < now()) FROM files")).scalar_one():
                break
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # The next run reconciles it: its last attempt is used up, so it ends FAILED in this run, which says so.
    finished = worker.run_ingestion(rt, ingestion, trigger="test")
    assert (finished.status, finished.files_failed) == ("PARTIAL", 1)
    [lost] = files(rt, "lost").values()
    assert (lost["status"], lost["error_type"], lost["run_id"]) == ("FAILED", "WorkerLost", finished.id)


def test_a_commit_that_landed_unseen_still_counts_as_the_runs_snapshot(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    """The batch's commit landed, but the ledger never heard of it (it went away right after): the
    retry finds the batch in the table, marks its file, and the run still counts that snapshot."""
    put_objects(bucket, {"unseen/0.jsonl": jsonl([{"id": 1}])})
    ingestion = ingest(rt, "unseen", f"s3://{bucket}/unseen/")
    the_run = runs.start(rt.db, ingestion.id, trigger="test", worker_id=rt.settings.worker_id)
    worker._discover(rt, ingestion, the_run, None)
    batch = claim(rt, ingestion, the_run.id)
    engine = engines.load_engine("arrow", rt, ingestion)
    staged = engine.stage(batch, threading.Event())
    table = tables.load_table(rt.catalog, ingestion.table_identifier)
    assert table is not None
    engine.commit(table, staged, tables.snapshot_properties(batch.batch_id, the_run.id, 1), [])  # the unseen commit

    result = commit_staged(rt, ingestion, the_run.id, batch, staged, engine)
    worker._record(rt, ingestion, the_run, staged, result, worker.Progress("processing"))

    assert (result.committed, result.succeeded) == (False, 1)
    assert runs.get(rt.db, the_run.id).snapshots_committed == 1, "the run JSON counts the commit that landed"
    assert files(rt, "unseen", "SUCCESS").keys() == {f"s3://{bucket}/unseen/0.jsonl"}
    assert len(load_table(rt, ingestion.table_identifier).metadata.snapshots) == 1, "committed once"
