"""The ledger's share of per-file cost: claims + commit bookkeeping, without S3 or Iceberg.

Runs the exactly-once protocol's SQL against a real (embedded) PostgreSQL exactly as a worker does
for each batch — claim (``FOR UPDATE SKIP LOCKED``, lease, fencing token, batch id), then in one
transaction the per-table lock, the fencing check and SUCCESS with the snapshot id (plus the
attempt history), then the run's counters — and reports files/s. Discovery (one upsert per
1,000-key page) is timed apart, and so is a no-op relisting (the same pages again, every file
known and unchanged: the ledger's share of a full listing that finds nothing). No data is read or
written: this is the floor the ledger puts under a run, to compare with a run's whole per-file cost.

    .venv/bin/python benchmarks/bookkeeping.py [--files 100000] [--batch 1000] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from icefloe import embedded, ingestions, ledger, migrations, runs
from icefloe.ingestions import IngestionSpec
from icefloe.ledger import FileOutcome, ListedObject


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000, help="files per claim (max_files_per_commit)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = p.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="icefloe-bookkeeping-"))
    url = embedded.ensure_postgres(home)
    try:
        migrations.upgrade(url)
        db = ledger.connect(url)
        spec = IngestionSpec(
            name="bookkeeping",
            source="s3://bench/tiny/",
            format="jsonl",
            table="bench.bookkeeping",
            max_files_per_commit=args.batch,
        )
        ingestion = ingestions.create(db, spec)
        now = dt.datetime.now(dt.UTC)

        pages = [
            [
                ListedObject(f"s3://bench/tiny/f{n:08d}.jsonl", 300, now, f"etag{n}")
                for n in range(first, min(first + 1000, args.files))
            ]
            for first in range(0, args.files, 1000)
        ]
        started = time.perf_counter()
        for page in pages:
            with db.begin() as conn:
                ledger.upsert_listing_page(conn, ingestion.id, page)
        discovery = time.perf_counter() - started

        run = runs.start(db, ingestion.id, trigger="cli", worker_id="bench")
        bounds = ledger.LockBounds.for_lease(60)
        claims = commits = 0.0
        done = snapshot = 0
        while True:
            t0 = time.perf_counter()
            with db.begin() as conn:
                batch = ledger.claim_batch(
                    conn,
                    ingestion_id=ingestion.id,
                    run_id=run.id,
                    owner="bench",
                    lease_seconds=60,
                    max_files=args.batch,
                    max_bytes=1 << 30,
                    max_retries=3,
                )
            t1 = time.perf_counter()
            if batch is None:
                break
            snapshot += 1
            outcomes = [FileOutcome(f, 3, f.size, 1) for f in batch.files]
            with db.begin() as conn:  # what commit.commit_batch does around the Iceberg commit
                ledger.lock_table(conn, ingestion.table_identifier, bounds)
                owned = ledger.files_still_owned(conn, batch.files)
                assert len(owned) == len(batch.files)
                done += ledger.mark_succeeded(conn, outcomes, snapshot, batch.batch_id)
            runs.add(db, run.id, files_succeeded=len(outcomes), records_ingested=3 * len(outcomes))
            claims += t1 - t0
            commits += time.perf_counter() - t1
        # A full listing that finds nothing new: the ledger's share of a no-op run.
        started = time.perf_counter()
        for page in pages:
            with db.begin() as conn:
                assert ledger.upsert_listing_page(conn, ingestion.id, page).new == 0
        relisting = time.perf_counter() - started
        db.dispose()
    finally:
        embedded.release_postgres(home)
        shutil.rmtree(home, ignore_errors=True)
    assert done == args.files, (done, args.files)
    figures = {
        "files": args.files,
        "batch": args.batch,
        "discovery_seconds": round(discovery, 2),
        "relisting_seconds": round(relisting, 2),
        "claim_seconds": round(claims, 2),
        "commit_bookkeeping_seconds": round(commits, 2),
        "files_per_second": round(args.files / (claims + commits)),
        "load_average": os.getloadavg(),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"{args.files:,} files in batches of {args.batch}: discovery {discovery:.2f} s "
            f"(a no-op relisting of them {relisting:.2f} s); "
            f"claims {claims:.2f} s + commit bookkeeping {commits:.2f} s = "
            f"{figures['files_per_second']:,} files/s (load {os.getloadavg()[0]:.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
