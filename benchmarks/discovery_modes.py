"""What each discovery mode costs in S3 LIST requests per run, measured on 10,000 files: ``--listing
full``, ``--listing incremental`` and ``--discovery events``. Not a test: it prints a table (and writes
it to ``benchmarks/results/``).

    .venv/bin/python benchmarks/discovery_modes.py              # 10,000 files, 100 new ones
    .venv/bin/python benchmarks/discovery_modes.py --files 100000 --new 1000

One run starts SeaweedFS, an embedded PostgreSQL and moto's SQS (all on 127.0.0.1) under a temporary
directory; uploads N tiny objects ``dt=YYYY-MM-DD/<uuid>.jsonl`` (1,000 a day; as ``listing.py``);
defines one ingestion per mode on that prefix (each its own table), records its first listing and
marks every file SUCCESS (reading 10,000 files is not what is measured); then, in this process with
one runtime, as a long-lived worker runs:

1. a **steady-state run** of each (nothing new);
2. ``--new`` more files on a later day, with one S3 notification each sent to the events queue (the
   shape S3 sends), and a run of each: they ingest the new files;
3. the events ingestion's **reconciling listing** (``icefloe run NAME --full-listing``, due daily by
   default) and the incremental one's full listing.

LIST requests are the runs' own ``list_requests`` (what botocore sent as ListObjectsV2 pages).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import boto3
import sqlalchemy as sa
from moto.server import ThreadedMotoServer
from sqlalchemy.pool import NullPool

from icefloe import embedded, ingestions, migrations, worker
from icefloe.ingestions import IngestionSpec
from icefloe.runtime import Runtime
from icefloe.s3 import ObjectReader
from icefloe.settings import S3Settings, Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listing import BUCKET, seed_ledger, upload

ROOT = Path(__file__).resolve().parent.parent
MODES: dict[str, dict[str, Any]] = {
    "--listing full": {"listing": "full"},
    "--listing incremental": {"listing": "incremental"},
    "--discovery events": {"discovery": "events"},
}


def publish(sqs: Any, queue_url: str, client: Any, keys: list[str]) -> None:
    """One S3 notification per key, as S3 sends them (form-encoded key, ETag, size, time)."""
    for start in range(0, len(keys), 10):
        entries = []
        for n, key in enumerate(keys[start : start + 10]):
            meta = client.head_object(Bucket=BUCKET, Key=key)
            record = {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventTime": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": BUCKET},
                    "object": {"key": key, "size": meta["ContentLength"], "eTag": meta["ETag"].strip('"')},
                },
            }
            entries.append({"Id": str(n), "MessageBody": json.dumps({"Records": [record]})})
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def measure(rt: Runtime, name: str, *, full_listing: bool = False) -> dict[str, Any]:
    run = worker.run_ingestion(rt, ingestions.get(rt.db, name), trigger="bench", full_listing=full_listing)
    assert run.status == "SUCCESS", (name, run.status, run.error_message)
    duration = (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else 0.0
    return {
        "list_requests": run.list_requests,
        "event_messages": run.event_messages,
        "files_new": run.files_new,
        "files_succeeded": run.files_succeeded,
        "missed": run.files_missed_by_incremental + run.files_missed_by_events,
        "seconds": duration,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=100)
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="icefloe-discovery-bench-"))
    n, prefix = options.files, f"n{options.files}/"
    rows: list[dict[str, Any]] = []
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    moto_port = embedded.free_ports(1)[0]
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    try:
        with embedded.start_seaweedfs(work / "seaweedfs") as s3:
            pg_home = work / "pg"
            url = embedded.ensure_postgres(pg_home)
            try:
                migrations.upgrade(url)
                engine = sa.create_engine(url, poolclass=NullPool)
                embedded.create_bucket(s3, BUCKET)
                client = embedded.s3_client(s3, max_pool_connections=32)
                endpoint = f"http://127.0.0.1:{moto_port}"
                sqs = boto3.client(
                    "sqs",
                    endpoint_url=endpoint,
                    region_name="us-east-1",
                    aws_access_key_id="x",
                    aws_secret_access_key="x",
                )
                queue = sqs.create_queue(QueueName="landing")["QueueUrl"]
                env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEFLOE_", "AWS_", "PYICEBERG_"))}
                env |= s3.env() | {"ICEFLOE_DATABASE_URL": url, "ICEFLOE_HOME": str(work / "home")}
                upload(client, prefix, n, seed=n)
                store = ObjectReader(client, S3Settings.from_env(env))
                names = {}
                for mode, fields in MODES.items():
                    name = mode.split()[-1]
                    extra = {"events_queue": queue} if mode.endswith("events") else {}
                    spec = IngestionSpec(
                        name=name,
                        source=f"s3://{BUCKET}/{prefix}",
                        format="jsonl",
                        table=f"b.{name}",
                        **fields,
                        **extra,
                    )
                    ingestions.create(engine, spec)
                    seed_ledger(engine, store, name)
                    names[mode] = name
                rt = Runtime.open(Settings.from_env(env))
                try:
                    for mode, name in names.items():
                        rows.append({"mode": mode, "step": "steady state (nothing new)"} | measure(rt, name))
                    day = dt.date(2030, 1, 1)
                    new_keys = [f"{prefix}dt={day:%Y-%m-%d}/{uuid.uuid4()}.jsonl" for _ in range(options.new)]
                    for key in new_keys:
                        client.put_object(Bucket=BUCKET, Key=key, Body=b'{"id": 2}\n')
                    publish(sqs, queue, client, new_keys)
                    for mode, name in names.items():
                        rows.append({"mode": mode, "step": f"{options.new} new files"} | measure(rt, name))
                    for mode in ("--listing incremental", "--discovery events"):
                        step = "reconciling listing (--full-listing; daily by default)"
                        rows.append({"mode": mode, "step": step} | measure(rt, names[mode], full_listing=True))
                finally:
                    rt.close()
                sqs.close()
                engine.dispose()
            finally:
                embedded.release_postgres(pg_home)
    finally:
        moto.stop()
    report(rows, n, load_before)


def report(rows: list[dict[str, Any]], n: int, load_before: str) -> None:
    lines = [
        f"{n:,} files known; every run in one process (a worker's)",
        "",
        "| discovery | run | LIST requests | queue messages | files new | run time |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['mode']}` | {r['step']} | {r['list_requests']} | {r['event_messages']} "
            f"| {r['files_new']} | {r['seconds']:.2f} s |"
        )
    lines.append(f"\nload average before: {load_before}; after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    text = "\n".join(lines)
    print(text)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"discovery-modes-{stamp}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
