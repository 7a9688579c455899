"""`icefloe demo`: the whole flow on embedded services, with sample data, in about a minute.

Starts an embedded PostgreSQL and an embedded S3 server (SeaweedFS) under a fresh directory,
writes sample files (JSON lines, gzipped, one corrupt), creates an ingestion, runs it, shows the
ledger and the Iceberg table, changes a file and runs again, then stops what it started.
"""

from __future__ import annotations

import gzip
import json
import random
import tempfile
from pathlib import Path
from typing import Any

from icefloe import embedded, ingestions, ledger, runs, tables, worker
from icefloe.cli.output import Output
from icefloe.ingestions import IngestionSpec
from icefloe.runtime import Runtime
from icefloe.settings import S3Settings, Settings

BUCKET = "landing"
EVENT_TYPES = ("page_view", "click", "add_to_cart", "checkout", "purchase")


def _events(rng: random.Random, first_id: int, n: int, day: int) -> bytes:
    rows = [
        {
            "id": first_id + i,
            "ts": f"2025-01-{day:02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00",
            "user_id": f"u{rng.randrange(1000):04d}",
            "event_type": rng.choice(EVENT_TYPES),
            "amount": round(rng.random() * 100, 2),
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def write_sample_files(s3: Any) -> int:
    """12 good files over 3 days (some gzipped), a Spark-style _SUCCESS marker and one corrupt file."""
    rng = random.Random(42)
    next_id = 0
    for day in (1, 2, 3):
        for part in range(4):
            body = _events(rng, next_id, 50, day)
            key = f"events/dt=2025-01-{day:02d}/part-{part}.jsonl"
            if part % 2:
                body, key = gzip.compress(body), key + ".gz"
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)
            next_id += 50
        s3.put_object(Bucket=BUCKET, Key=f"events/dt=2025-01-{day:02d}/_SUCCESS", Body=b"")
    s3.put_object(Bucket=BUCKET, Key="events/dt=2025-01-03/part-9.jsonl.gz", Body=b"this is not gzip")
    return next_id


def run(out: Output) -> None:
    home = Path(tempfile.mkdtemp(prefix="icefloe-demo-"))
    out.message(f"[bold]icefloe demo[/bold] — embedded services under {home}")
    server = embedded.start_seaweedfs(home / "s3")
    # The demo's own settings: its services, whatever this shell's ICEFLOE_* and AWS_* say.
    settings = Settings(
        home=home,
        s3=S3Settings(
            endpoint_url=server.endpoint,
            region=server.region,
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,
        ),
    )
    rt: Runtime | None = None
    try:
        embedded.create_bucket(server, BUCKET)
        rt = Runtime.open(settings)
        out.message(f"S3 (SeaweedFS) at {server.endpoint}; PostgreSQL under {home / 'postgres'}")
        rows = write_sample_files(rt.s3)
        out.message(f"wrote {rows} events in 12 files + 1 corrupt file + _SUCCESS markers to s3://{BUCKET}/events/")

        spec = IngestionSpec(
            name="demo-events",
            source=f"s3://{BUCKET}/events/",
            format="jsonl",
            table="demo.events",
            pattern="**/*.jsonl{,.gz}",
        )
        ingestion = ingestions.create(rt.db, spec)
        out.message(
            "\n$ icefloe ingestion create demo-events --source s3://landing/events/ --format jsonl "
            "--table demo.events --pattern '**/*.jsonl{,.gz}'"
        )

        first = worker.run_ingestion(rt, ingestion, trigger="demo")
        out.message("\n$ icefloe run demo-events")
        out.record(runs.summary(first, ingestion.name), title=f"run {first.id}: {first.status}")
        with rt.db.connect() as conn:
            failed = ledger.list_files(conn, ingestion.id, status="FAILED")
        out.message("\n$ icefloe files demo-events --status FAILED")
        out.table(failed, ["file_path", "error_type", "error_message"])

        table = tables.load_table(rt.catalog, "demo.events")
        assert table is not None
        preview = table.scan(limit=5).to_arrow()
        out.message(
            f"\nIceberg table demo.events: {table.scan().to_arrow().num_rows} rows, "
            f"{len(table.metadata.snapshots)} snapshot(s); first rows:"
        )
        out.table(preview.to_pylist(), preview.schema.names)

        rt.s3.put_object(
            Bucket=BUCKET,
            Key="events/dt=2025-01-01/part-0.jsonl",
            Body=_events(random.Random(1), 10_000, 3, 1),
        )
        second = worker.run_ingestion(rt, ingestion, trigger="demo")
        out.message("\nchanged events/dt=2025-01-01/part-0.jsonl (50 → 3 rows) and ran again (on-change=replace):")
        out.record(runs.summary(second, ingestion.name), title=f"run {second.id}: {second.status}")
        table = table.refresh()
        out.message(f"table now holds {table.scan().to_arrow().num_rows} rows (old version's rows replaced)")
        snap = table.current_snapshot()
        if snap is not None and snap.summary is not None:
            props = {k: v for k, v in snap.summary.additional_properties.items() if k.startswith("icefloe.")}
            out.record(props, title="latest snapshot's summary")
    finally:
        if rt is not None:
            rt.close()
        server.stop()
    out.message(f"\nservices stopped; data left in {home}")
