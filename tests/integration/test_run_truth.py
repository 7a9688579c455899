"""A run's final status tells the truth about the files it claimed."""

from __future__ import annotations

from it_support import ingest

from icefloe import ledger, runs
from icefloe.runtime import Runtime


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
