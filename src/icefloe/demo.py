"""`icefloe demo`: the whole flow on embedded services, with sample data, in about a minute.

Starts (or uses, after `icefloe services start --s3`) an embedded PostgreSQL and an embedded S3
server (SeaweedFS) under ICEFLOE_HOME, where the data stays for `icefloe sql` and the rest,
writes sample files (JSON lines, gzipped, one corrupt), creates an ingestion, runs it, shows the
ledger and the Iceberg table, changes a file and runs again, then stops what it started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import random
import shutil
from pathlib import Path
from typing import Any

from icefloe import embedded, ingestions, ledger, query, runs, services, tables, worker
from icefloe.cli.output import Output
from icefloe.errors import NotFoundError
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


NEXT_STEPS = """
What next (from a clone: .venv/bin/icefloe, or `source .venv/bin/activate` first):
  icefloe sql "SELECT event_type, count(*) FROM demo.events GROUP BY 1"   # SQL on the table (DuckDB)
  icefloe table show demo.events                    # schema, files, snapshots with their run ids
  icefloe files demo-events --status FAILED         # the ledger: what failed and why
  icefloe files demo-events --history dt=2025-01-03/part-9.jsonl.gz   # every attempt at one file
  icefloe services start && icefloe catalog connect  # reach the catalog from pyiceberg, Spark, DuckDB
  icefloe token create --name me --role admin && icefloe serve   # dashboard: sign in at http://127.0.0.1:8000/"""


def _reset(rt: Runtime) -> None:
    """Start over: the previous demo's ingestion (and ledger) and table go."""
    with contextlib.suppress(NotFoundError):
        ingestions.delete(rt.db, "demo-events")
    if tables.load_table(rt.catalog, "demo.events") is not None:
        rt.catalog.drop_table("demo.events")


def run(out: Output, settings: Settings) -> None:
    """The demo, on the embedded services of ``settings.home`` (ICEFLOE_HOME), where its data stays."""
    home = settings.home.expanduser().resolve()
    out.message(f"icefloe demo: embedded PostgreSQL and S3, data under {home}", style="bold")
    running = services.status(home)
    server: embedded.SeaweedS3 | None = None
    if running is not None and "s3" in running:
        s3_env = dict(running["s3"]["env"])
    else:
        shutil.rmtree(home / "demo-s3", ignore_errors=True)
        server = embedded.start_seaweedfs(home / "demo-s3")
        s3_env = server.env()
    # The demo's own settings: its services, whatever this shell's ICEFLOE_* and AWS_* say.
    demo_settings = dataclasses.replace(
        settings,
        home=home,
        database_url=None,
        catalog_name=None,
        warehouse_url=None,
        s3=S3Settings(
            endpoint_url=s3_env["AWS_ENDPOINT_URL"],
            region=s3_env.get("AWS_REGION", "us-east-1"),
            access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
            secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        ),
    )
    rt: Runtime | None = None
    try:
        if server is not None:
            embedded.create_bucket(server, BUCKET)
        else:
            with contextlib.suppress(Exception):  # exists already
                embedded_client(s3_env).create_bucket(Bucket=BUCKET)
        rt = Runtime.open(demo_settings)
        out.message(f"S3 (SeaweedFS) at {s3_env['AWS_ENDPOINT_URL']}; PostgreSQL under {home / 'postgres'}")
        _reset(rt)
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
        statement = (
            "SELECT event_type, count(*) AS events, round(sum(amount), 2) AS amount "
            "FROM demo.events GROUP BY 1 ORDER BY 2 DESC"
        )
        out.message(f'\n$ icefloe sql "{statement}"')
        result = query.run(rt.catalog, statement, limit=None)
        out.table(result.records(), result.columns)

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
        if server is not None:
            server.stop()
    out.message(NEXT_STEPS)
    if home != (Path.home() / ".icefloe").resolve():
        out.message(f"  export ICEFLOE_HOME={home}   # where the demo's data is (default ~/.icefloe)")
    stopped = "the demo's S3 server has stopped" if server is not None else "S3 keeps running (icefloe services stop)"
    out.message(
        f"\nYour data: ledger and catalog in PostgreSQL under {home / 'postgres'}, table files under "
        f"{home / 'warehouse'}; {stopped}."
    )
    out.message("Run it again: make demo (or icefloe demo): it starts over with a fresh ingestion and table.")


def embedded_client(env: dict[str, str]) -> Any:
    """A boto3 client for an S3 server given by its AWS_* variables."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}),
    )
