"""`icefloe worker` and schedules against real PostgreSQL and SeaweedFS."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from icefloe import daemon, ingestions, ledger, runs, scheduler, worker
from icefloe.errors import RunInProgressError
from icefloe.ingestions import IngestionSpec
from icefloe.runtime import Runtime
from tests.support.ledger import Ledger
from tests.support.services import PutObjects
from tests.support.waiting import wait_for


@pytest.fixture
def rt(rt: Runtime) -> Iterator[Runtime]:
    """The integration tier's Runtime with a 6 s lease: a dead helper's batch is reconcilable soon."""
    runtime = Runtime.open(dataclasses.replace(rt.settings, lease_seconds=6))
    yield runtime
    runtime.close()


def seed(put_objects: PutObjects, bucket: str, files: int, rows: int = 5) -> set[int]:
    ids: set[int] = set()
    objects = {}
    for f in range(files):
        lines = []
        for r in range(rows):
            ids.add(f * rows + r)
            lines.append(json.dumps({"id": f * rows + r, "v": f"f{f}"}))
        objects[f"in/part-{f:04d}.jsonl"] = ("\n".join(lines) + "\n").encode()
    put_objects(bucket, objects)
    return ids


def table_ids(rt: Runtime, identifier: str) -> list[int]:
    table = rt.catalog.load_table(identifier)
    return sorted(table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())


def test_schedule_fires_once_per_due_time_whatever_the_number_of_workers(rt: Runtime, bucket: str) -> None:
    ingestion = ingestions.create(
        rt.db,
        IngestionSpec(
            name="every", source=f"s3://{bucket}/in/", format="jsonl", table="t.every", schedule_interval_seconds=60
        ),
    )
    with rt.db.begin() as conn:  # as if created 10 minutes ago: 10 fires were missed
        conn.execute(sa.text("UPDATE ingestions SET created_at = now() - interval '10 minutes 5 seconds'"))

    # 8 "workers" evaluate the schedules at the same moment, several times each.
    with ThreadPoolExecutor(8) as pool:
        queued = sum(pool.map(lambda _: scheduler.enqueue_due_runs(rt.db), range(24)))

    scheduled = [r for r in runs.list_for(rt.db, ingestion.id) if r.trigger == "schedule"]
    assert queued == 1 and len(scheduled) == 1, "missed fires coalesce into exactly one run"
    assert scheduled[0].status == "PENDING"
    assert scheduled[0].scheduled_for is not None
    age = dt.datetime.now(dt.UTC) - scheduled[0].scheduled_for
    assert dt.timedelta(0) <= age < dt.timedelta(seconds=65), "the run stands for the latest missed fire"

    # While that run is pending, no other run is queued even when the next fire is due.
    with rt.db.begin() as conn:
        conn.execute(sa.text("UPDATE ingestions SET created_at = created_at - interval '1 minute'"))
    assert scheduler.enqueue_due_runs(rt.db) == 0


def test_schedule_of_an_ingestion_allowing_concurrent_runs_fires_beside_a_pending_run(rt: Runtime, bucket: str) -> None:
    ingestion = ingestions.create(
        rt.db,
        IngestionSpec(
            name="both",
            source=f"s3://{bucket}/in/",
            format="jsonl",
            table="t.both",
            schedule_interval_seconds=60,
            allow_concurrent_runs=True,
        ),
    )
    manual = runs.enqueue(rt.db, ingestion, trigger="cli")
    with rt.db.begin() as conn:
        conn.execute(sa.text("UPDATE ingestions SET created_at = now() - interval '2 minutes 5 seconds'"))
    assert scheduler.enqueue_due_runs(rt.db) == 1
    assert scheduler.enqueue_due_runs(rt.db) == 0, "one run per fire time"
    queued = sorted((r.trigger, r.status) for r in runs.list_for(rt.db, ingestion.id))
    assert queued == [("cli", "PENDING"), ("schedule", "PENDING")] and manual.status == "PENDING"


def test_paused_ingestion_gets_no_scheduled_run(rt: Runtime, bucket: str) -> None:
    ingestion = ingestions.create(
        rt.db,
        IngestionSpec(
            name="paused", source=f"s3://{bucket}/in/", format="jsonl", table="t.paused", schedule_cron="* * * * *"
        ),
    )
    ingestions.set_status(rt.db, "paused", "PAUSED")
    with rt.db.begin() as conn:
        conn.execute(sa.text("UPDATE ingestions SET created_at = now() - interval '1 hour'"))
    assert scheduler.enqueue_due_runs(rt.db) == 0
    assert runs.list_for(rt.db, ingestion.id) == []


def test_enqueue_refuses_a_second_run_in_progress(rt: Runtime, bucket: str) -> None:
    ingestion = ingestions.create(
        rt.db, IngestionSpec(name="q", source=f"s3://{bucket}/in/", format="jsonl", table="t.q")
    )
    runs.enqueue(rt.db, ingestion, trigger="cli")
    with pytest.raises(RunInProgressError):
        runs.enqueue(rt.db, ingestion, trigger="cli")


@pytest.mark.parametrize("workers", [1, 4])
def test_workers_execute_queued_runs_and_share_the_files(
    rt: Runtime, bucket: str, put_objects: PutObjects, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = seed(put_objects, bucket, files=120)
    ingestion = ingestions.create(
        rt.db,
        IngestionSpec(name="w", source=f"s3://{bucket}/in/", format="jsonl", table="t.w", max_files_per_commit=10),
    )
    run = runs.enqueue(rt.db, ingestion, trigger="api")
    # 12 batches each held 0.3 s after its data files are written: while one worker holds a batch,
    # the others find the next ones claimable, so with 4 workers more than one must take part.
    monkeypatch.setenv("ICEFLOE_FAULT_POINT", "after-write:sleep=0.3")
    processes = [
        daemon.WorkerProcess(
            Runtime.open(dataclasses.replace(rt.settings, worker_id=f"worker-{n}")),
            concurrency=1,
            poll_seconds=0.2,
            grace_seconds=5,
        )
        for n in range(workers)
    ]
    threads = [threading.Thread(target=p.run) for p in processes]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: runs.get(rt.db, run.id).status not in ("PENDING", "RUNNING"), timeout=120, what="the run")
    finally:
        for p in processes:
            p.stop.set()
        for t in threads:
            t.join(30)
        for p in processes:
            p.rt.close()
    finished = runs.get(rt.db, run.id)
    assert finished.status == "SUCCESS"
    assert finished.files_succeeded == 120
    assert table_ids(rt, "t.w") == sorted(expected), "every row exactly once"
    # Who ingested what, from the files' attempt history: the work was shared.
    sharing = Ledger(rt.db).attempt_workers("SUCCESS")
    if workers == 1:
        assert sharing == {"worker-0"}
    else:
        assert len(sharing) >= 2, f"only {sharing} ingested files"


def test_sigterm_stops_a_worker_gracefully_without_leaving_leases(
    icefloe_env: dict[str, str],
    rt: Runtime,
    bucket: str,
    put_objects: PutObjects,
    tmp_path: Path,
) -> None:
    expected = seed(put_objects, bucket, files=60)
    ingestion = ingestions.create(
        rt.db,
        IngestionSpec(name="g", source=f"s3://{bucket}/in/", format="jsonl", table="t.g", max_files_per_commit=5),
    )
    run = runs.enqueue(rt.db, ingestion, trigger="cli")
    # Slow each batch down after its data files are written, so SIGTERM lands mid-batch.
    env = icefloe_env | {"ICEFLOE_FAULT_POINT": "after-write:sleep=1.5", "ICEFLOE_LEASE_SECONDS": "30"}
    proc = subprocess.Popen(
        ["icefloe", "worker", "--poll-seconds", "0.2", "--grace-seconds", "20"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: runs.get(rt.db, run.id).files_succeeded >= 5, timeout=60, what="the first batch")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr

    with rt.db.connect() as conn:
        leased = conn.execute(sa.text("SELECT count(*) FROM files WHERE status = 'PROCESSING'")).scalar_one()
    assert leased == 0, "no lease left behind"
    stopped = runs.get(rt.db, run.id)
    assert stopped.status == "PENDING", "the unfinished run went back to the queue"
    assert 0 < stopped.files_succeeded < 60

    # Another worker picks the run up and finishes it: nothing lost, nothing twice.
    finisher = daemon.WorkerProcess(rt, poll_seconds=0.2)
    thread = threading.Thread(target=finisher.run)
    thread.start()
    try:
        wait_for(lambda: runs.get(rt.db, run.id).status == "SUCCESS", timeout=90, what="the run to finish")
    finally:
        finisher.stop.set()
        thread.join(30)
    assert runs.get(rt.db, run.id).status == "SUCCESS"
    assert table_ids(rt, "t.g") == sorted(expected)


def test_cancel_of_a_running_run_stops_it_between_batches(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    seed(put_objects, bucket, files=40)
    ingestion = ingestions.create(
        rt.db,
        IngestionSpec(name="c", source=f"s3://{bucket}/in/", format="jsonl", table="t.c", max_files_per_commit=2),
    )
    run = runs.enqueue(rt.db, ingestion, trigger="api")
    process = daemon.WorkerProcess(rt, poll_seconds=0.2)
    thread = threading.Thread(target=process.run)
    thread.start()
    try:
        wait_for(lambda: runs.get(rt.db, run.id).files_succeeded >= 2, timeout=60, what="the first batch")
        runs.cancel(rt.db, run.id)
        wait_for(lambda: runs.get(rt.db, run.id).status != "RUNNING", timeout=60, what="the run to stop")
    finally:
        process.stop.set()
        thread.join(30)
    cancelled = runs.get(rt.db, run.id)
    assert cancelled.status == "CANCELLED"
    assert 0 < cancelled.files_succeeded < 40, "stopped between batches, not before or after all"
    with rt.db.connect() as conn:
        leased = conn.execute(sa.text("SELECT count(*) FROM files WHERE status = 'PROCESSING'")).scalar_one()
    assert leased == 0
    # What was committed is in the table exactly once; the rest waits for the next run.
    assert len(table_ids(rt, "t.c")) == cancelled.records_ingested


@pytest.mark.parametrize(
    ("max_retries", "status", "succeeded", "failed"),
    [(3, "SUCCESS", 30, 0), (1, "PARTIAL", 20, 10)],
    ids=["retried-by-the-run", "out-of-attempts"],
)
def test_a_run_ends_only_once_a_dead_helpers_batch_is_resolved(
    rt: Runtime, bucket: str, put_objects: PutObjects, max_retries: int, status: str, succeeded: int, failed: int
) -> None:
    """A helping worker claims a batch of the run and dies. The run's executor waits for its lease
    to expire, reconciles it, and ingests those files itself (or, out of attempts, counts them
    failed once) before finishing: never SUCCESS with files nobody will ingest."""
    expected = seed(put_objects, bucket, files=30)
    ingestion = ingestions.create(
        rt.db,
        IngestionSpec(
            name="h",
            source=f"s3://{bucket}/in/",
            format="jsonl",
            table="t.h",
            max_files_per_commit=10,
            max_retries=max_retries,
        ),
    )
    run = runs.start(rt.db, ingestion.id, trigger="cli", worker_id=rt.settings.worker_id)
    helper_batch: list[ledger.Batch] = []

    def helper_claims_then_dies(progress: worker.Progress) -> None:
        # Called once discovery is done, before the executor's first claim.
        if progress.phase == "processing" and not helper_batch:
            with rt.db.begin() as conn:
                batch = ledger.claim_batch(
                    conn,
                    ingestion_id=ingestion.id,
                    run_id=run.id,
                    owner="other-host:4242:dead",
                    lease_seconds=3,
                    max_files=10,
                    max_bytes=1 << 30,
                    max_retries=max_retries,
                )
            assert batch is not None
            helper_batch.append(batch)

    finished = worker.execute_run(rt, ingestion, run, progress=helper_claims_then_dies)

    assert (finished.status, finished.files_succeeded, finished.files_failed) == (status, succeeded, failed)
    helper_ids = [f.id for f in helper_batch[0].files]
    with rt.db.connect() as conn:
        left = conn.execute(
            sa.text("SELECT status, error_type FROM files WHERE id = ANY(:ids)"), {"ids": helper_ids}
        ).all()
        lost_attempts = conn.execute(
            sa.text("SELECT count(*) FROM file_attempts WHERE file_id = ANY(:ids) AND error_type = 'WorkerLost'"),
            {"ids": helper_ids},
        ).scalar_one()
    assert lost_attempts == 10, "the dead helper's attempt is in each file's history"
    if failed:
        assert {(r.status, r.error_type) for r in left} == {("FAILED", "WorkerLost")}
        helper_rows = {int(f.file_path.rsplit("-", 1)[1].split(".")[0]) for f in helper_batch[0].files}
        expected = {i for i in expected if i // 5 not in helper_rows}
    else:
        assert {r.status for r in left} == {"SUCCESS"}
    assert table_ids(rt, "t.h") == sorted(expected), "every other row exactly once"
