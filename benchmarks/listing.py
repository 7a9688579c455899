"""Discovery at scale: does a no-op run cost more than the LIST itself, and does it grow with the keys
the ledger already knows? Not a test: it prints a table (and writes it to ``benchmarks/results/``).

    .venv/bin/python benchmarks/listing.py                       # 10k and 100k keys, 1M in the ledger
    .venv/bin/python benchmarks/listing.py --sizes 10000 --ledger-extra 0

One run:
1. starts SeaweedFS (``weed mini``) and an embedded PostgreSQL under a temporary directory
   (``icefloe.embedded``, 127.0.0.1 only);
2. per size N: uploads N tiny JSONL objects ``dt=YYYY-MM-DD/<uuid>.jsonl`` (1,000 a day, random
   names inside a day) under ``s3://listing/nN/``; defines ingestions on that prefix in the three
   listing modes (full, incremental, incremental with ``--relist-lookback 2d``); records the first
   listing of each straight with ``icefloe.discovery.discover`` and marks every file SUCCESS with SQL
   (as if ingested: reading 100,000 files is not what is measured here);
3. times, each in a child process started from this small harness: the **bare LIST** two ways
   (``ListObjectsV2`` pages and nothing else: with boto3 as shipped, and with icefloe's own S3
   client, whose pages :mod:`icefloe.s3_listing` parses) and the **no-op run**
   (``icefloe run NAME --json``: reconcile, discover, claim nothing, finish), alternating, ``--repeat``
   times each; reports the medians, the run's own ``duration_seconds`` (which includes making the S3
   client and the first ledger connections of a fresh process), its LIST requests and the child's peak
   RSS (GNU ``time``'s ``%M``, see :func:`run_child`); then **warm**, as a long-lived worker runs: one process that
   alternates both bare LISTs and ``worker.run_ingestion`` (with the worker's client), ``--repeat`` times;
4. with ``--ledger-extra M``: adds M more SUCCESS rows to the largest size's ingestion straight with
   SQL (keys of older days, absent from S3) and measures its no-op runs again: the time must not grow
   with the keys already known.

The machine is shared: the load average before and after is printed with the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from icefloe import discovery, embedded, ingestions, migrations
from icefloe.ingestions import IngestionSpec
from icefloe.s3 import ObjectReader
from icefloe.settings import S3Settings
from icefloe.stores import parse_source

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "listing"
PER_DAY = 1000
MODES: dict[str, dict[str, Any]] = {
    "full": {"listing": "full"},
    "incremental": {"listing": "incremental"},
    "incremental --relist-lookback 2d": {"listing": "incremental", "relist_lookback_seconds": 2 * 86400},
}

# The bare LIST, two ways: "icefloe" with icefloe's own S3 client (make_client: icefloe.s3_listing
# parses the pages), "sdk" with boto3 as shipped (its own parser, as the AWS CLI and most tools list).
BARE_LIST = """
import os, sys, time
import boto3
from botocore.config import Config
from icefloe.s3 import make_client
from icefloe.settings import S3Settings
bucket, prefix, kind = sys.argv[1:4]
if kind == "icefloe":
    client = make_client(S3Settings.from_env(os.environ))
else:
    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
started = time.perf_counter()
pages = keys = 0
for page in client.get_paginator("list_objects_v2").paginate(
    Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}
):
    pages += 1
    keys += len(page.get("Contents", []))
print(time.perf_counter() - started, pages, keys)
"""


# A worker's view: one process, warm (imports done, S3 client and ledger connections made), alternating
# the bare LIST and a no-op run of the ingestion with the same client.
WARM = """
import os, statistics, sys, time
import boto3
from botocore.config import Config
from icefloe import ingestions, worker
from icefloe.runtime import Runtime
from icefloe.settings import Settings
bucket, prefix, name, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rt = Runtime.open(Settings.from_env(os.environ), migrate=False)
ingestion = ingestions.get(rt.db, name)
worker.run_ingestion(rt, ingestion, trigger="bench")
sdk = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
bare, sdk_bare, runs = [], [], []
for _ in range(repeat):
    for client, times in ((sdk, sdk_bare), (rt.s3, bare)):
        started = time.perf_counter()
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}
        ):
            pass
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    run = worker.run_ingestion(rt, ingestion, trigger="bench")
    runs.append(time.perf_counter() - started)
    assert run.status == "SUCCESS" and run.files_new == 0, run
print(statistics.median(sdk_bare), statistics.median(bare), statistics.median(runs))
"""


def run_child(args: list[str], env: dict[str, str]) -> tuple[str, float, int]:
    """Run a child process; its stdout, wall seconds and its own peak RSS in MiB.

    Started through GNU ``time``: a child forked straight from this harness would inherit the
    harness's RSS at fork as its ``ru_maxrss`` high-water mark (Linux copies it at fork and keeps it
    across exec); a child of ``time`` is forked from a process of a few MiB. -1 without ``time``.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        timed = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name, *args] if Path("/usr/bin/time").exists() else args
        started = time.perf_counter()
        proc = subprocess.run(timed, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args[:4])} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
        text = rss_file.read().strip()
    return proc.stdout, wall, int(text.splitlines()[-1]) // 1024 if text else -1


def upload(client: Any, prefix: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    day0 = dt.date(2025, 1, 1)
    keys = [
        f"{prefix}dt={day0 + dt.timedelta(days=i // PER_DAY):%Y-%m-%d}/{uuid.UUID(int=rng.getrandbits(128))}.jsonl"
        for i in range(n)
    ]
    body = b'{"id": 1}\n'
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=BUCKET, Key=k, Body=body), keys))


def seed_ledger(engine: sa.Engine, store: ObjectReader, name: str) -> float:
    """The first listing of ``name`` recorded with discovery itself; every file then SUCCESS."""
    i = ingestions.get(engine, name)
    location = parse_source(i.source)
    started = time.perf_counter()
    discovery.discover(
        engine, store, ingestion_id=i.id, location=location, flt=discovery.Filter(location.prefix, None, None)
    )
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE files SET status = 'SUCCESS', processed_at = now(), records_ingested = 1 "
                "WHERE ingestion_id = :i"
            ),
            {"i": i.id},
        )
        conn.execute(sa.text("ANALYZE files"))
    return seconds


def add_known_keys(engine: sa.Engine, name: str, prefix: str, count: int) -> None:
    """``count`` more SUCCESS rows for ``name``, of days before any listed one (absent from S3)."""
    i = ingestions.get(engine, name)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO files (ingestion_id, file_path, size, etag, status, modified_at, processed_at,
                                   records_ingested)
                SELECT :i, :root || 'dt=' || to_char(date '2020-01-01' + n / 1000, 'YYYY-MM-DD') || '/'
                           || md5(n::text) || '.jsonl',
                       10, md5('etag' || n), 'SUCCESS', now(), now(), 1
                FROM generate_series(1, :count) AS n
                """
            ),
            {"i": i.id, "root": f"s3://{BUCKET}/{prefix}", "count": count},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE files"))


def measure(env: dict[str, str], name: str, prefix: str, repeat: int) -> dict[str, Any]:
    bare: list[float] = []
    sdk_bare: list[float] = []
    runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        out, _, _ = run_child([sys.executable, "-c", BARE_LIST, BUCKET, prefix, "sdk"], env)
        sdk_bare.append(float(out.split()[0]))
        out, _, _ = run_child([sys.executable, "-c", BARE_LIST, BUCKET, prefix, "icefloe"], env)
        bare.append(float(out.split()[0]))
        out, wall, rss = run_child([str(Path(sys.executable).parent / "icefloe"), "run", name, "--json"], env)
        summary = json.loads(out)
        runs.append({"run": summary["duration_seconds"], "wall": wall, "rss": rss, "lists": summary["list_requests"]})
    out, _, _ = run_child([sys.executable, "-c", WARM, BUCKET, prefix, name, str(repeat)], env)
    warm_sdk_bare, warm_bare, warm_run = (float(x) for x in out.split())
    return {
        "warm_sdk_list_s": warm_sdk_bare,
        "warm_bare_list_s": warm_bare,
        "warm_run_s": warm_run,
        "sdk_list_s": statistics.median(sdk_bare),
        "bare_list_s": statistics.median(bare),
        "run_s": statistics.median(r["run"] for r in runs),
        "cli_wall_s": statistics.median(r["wall"] for r in runs),
        "peak_rss_mib": max(r["rss"] for r in runs),
        "list_requests": runs[-1]["lists"],
    }


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="keys in S3, comma-separated")
    parser.add_argument("--ledger-extra", type=int, default=900_000, help="rows added to the largest size's ledger")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help="listing modes to measure, comma-separated")
    options = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the servers below are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(s) for s in options.sizes.split(",")]

    work = Path(tempfile.mkdtemp(prefix="icefloe-listing-bench-"))
    rows: list[dict[str, Any]] = []
    load_before = loadavg()
    with embedded.start_seaweedfs(work / "seaweedfs") as s3:
        pg_home = work / "pg"
        url = embedded.ensure_postgres(pg_home)
        try:
            migrations.upgrade(url)
            engine = sa.create_engine(url, poolclass=NullPool)
            embedded.create_bucket(s3, BUCKET)
            client = embedded.s3_client(s3, max_pool_connections=32)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEFLOE_", "AWS_", "PYICEBERG_"))}
            env |= s3.env() | {"ICEFLOE_DATABASE_URL": url, "ICEFLOE_HOME": str(work / "home")}
            os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
            store = ObjectReader(client, S3Settings.from_env(env))
            for n in sizes:
                prefix = f"n{n}/"
                started = time.perf_counter()
                upload(client, prefix, n, seed=n)
                print(f"uploaded {n:,} objects in {time.perf_counter() - started:.0f} s", flush=True)
                for m, (mode, fields) in enumerate(MODES.items()):
                    if mode not in options.modes.split(","):
                        continue
                    name = f"n{n}-{mode.replace(',', '').replace(' ', '-')}"
                    ingestions.create(
                        engine,
                        IngestionSpec(
                            name=name, source=f"s3://{BUCKET}/{prefix}", format="jsonl", table=f"b.t{n}_{m}", **fields
                        ),
                    )
                    first = seed_ledger(engine, store, name)
                    result = measure(env, name, prefix, options.repeat if mode == "full" else 1)
                    rows.append({"keys_s3": n, "keys_ledger": n, "mode": mode, "first_listing_s": first, **result})
                    print(rows[-1], flush=True)
            if options.ledger_extra:
                n = max(sizes)
                for mode in ("full", "incremental"):
                    name = f"n{n}-{mode}"
                    add_known_keys(engine, name, f"n{n}/", options.ledger_extra)
                    result = measure(env, name, f"n{n}/", options.repeat if mode == "full" else 1)
                    rows.append(
                        {"keys_s3": n, "keys_ledger": n + options.ledger_extra, "mode": mode, "first_listing_s": None}
                        | result
                    )
                    print(rows[-1], flush=True)
            engine.dispose()
        finally:
            embedded.release_postgres(pg_home)
    report(rows, load_before, loadavg())


def report(rows: list[dict[str, Any]], load_before: str, load_after: str) -> None:
    lines = [
        "| keys in S3 | keys in the ledger | listing | LIST requests | boto3 LIST | icefloe LIST | no-op run "
        "| run / boto3 LIST | run / icefloe LIST | warm: boto3 LIST | warm: icefloe LIST | warm: no-op run "
        "| warm: run / boto3 LIST | warm: run / icefloe LIST | `icefloe run` wall | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['keys_s3']:,} | {r['keys_ledger']:,} | {r['mode']} | {r['list_requests']} "
            f"| {r['sdk_list_s']:.2f} s | {r['bare_list_s']:.2f} s | {r['run_s']:.2f} s "
            f"| {r['run_s'] / r['sdk_list_s']:.2f}x | {r['run_s'] / r['bare_list_s']:.2f}x "
            f"| {r['warm_sdk_list_s']:.2f} s | {r['warm_bare_list_s']:.2f} s | {r['warm_run_s']:.2f} s "
            f"| {r['warm_run_s'] / r['warm_sdk_list_s']:.2f}x | {r['warm_run_s'] / r['warm_bare_list_s']:.2f}x "
            f"| {r['cli_wall_s']:.1f} s | {r['peak_rss_mib']} MiB |"
        )
    lines.append(f"\nload average (1, 5, 15 min) before: {load_before}; after: {load_after}")
    text = "\n".join(lines)
    print(text)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"listing-{stamp}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
