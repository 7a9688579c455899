"""DuckDB → Parquet, the engine limit of ``run.py``: no Iceberg, no ledger, no exactly-once.

    python benchmarks/duckdb_loader.py --bucket landing --prefix d1/ --format jsonl --out duckdb/d1.parquet

Reads the objects under the prefix with 16 parallel boto3 GETs into a local directory (DuckDB's own S3
support is an extension downloaded at run time, which this machine cannot fetch), has DuckDB parse
them all (``read_json``/``read_csv``, all cores) into one zstd Parquet file, uploads it to
``s3://warehouse/OUT`` and prints one JSON line: rows, distinct ids, id range, seconds. S3 settings
come from ``BENCH_S3_ENDPOINT``, ``BENCH_S3_KEY``, ``BENCH_S3_SECRET``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def main(argv: list[str]) -> int:
    import boto3
    import duckdb
    from botocore.config import Config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--format", choices=("jsonl", "csv"), required=True)
    p.add_argument("--out", required=True, help="key in the warehouse bucket")
    p.add_argument("--warehouse-bucket", default="warehouse")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["BENCH_S3_ENDPOINT"],
        aws_access_key_id=os.environ["BENCH_S3_KEY"],
        aws_secret_access_key=os.environ["BENCH_S3_SECRET"],
        region_name="us-east-1",
        config=Config(max_pool_connections=16),
    )
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket, Prefix=args.prefix)
        for o in page.get("Contents", [])
    ]
    with tempfile.TemporaryDirectory(prefix="duckdb-loader-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()

        def fetch(n_key: tuple[int, str]) -> None:
            n, key = n_key
            # get_object, not download_file: the transfer manager costs ~15 ms per small object.
            with open(src / f"{n:08d}.{args.format}", "wb") as f:
                body = s3.get_object(Bucket=args.bucket, Key=key)["Body"]
                for chunk in body.iter_chunks(8 << 20):
                    f.write(chunk)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(fetch, enumerate(keys)))
        fetched = time.perf_counter()
        out = Path(tmp) / "out.parquet"
        con = duckdb.connect()
        con.execute(f"SET temp_directory = '{tmp}/spill'")
        reader = "read_json_auto" if args.format == "jsonl" else "read_csv_auto"
        con.execute(
            f"COPY (SELECT * FROM {reader}('{src}/*.{args.format}')) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
        )
        parsed = time.perf_counter()
        s3.upload_file(str(out), args.warehouse_bucket, args.out)
        rows, distinct, lo, hi = con.execute(
            f"SELECT count(*), count(DISTINCT id), min(id), max(id) FROM read_parquet('{out}')"
        ).fetchone()  # type: ignore[misc]
    print(
        json.dumps(
            {
                "files": len(keys),
                "rows": rows,
                "distinct_ids": distinct,
                "min_id": lo,
                "max_id": hi,
                "fetch_seconds": round(fetched - t0, 3),
                "parse_write_seconds": round(parsed - fetched, 3),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
