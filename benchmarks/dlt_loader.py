#!/usr/bin/env python3
"""dlt → Iceberg, the way the reference README describes it (run by benchmarks/run.py --with-dlt).

Runs inside ``benchmarks/.venv-dlt`` (``pip install 'dlt[filesystem,pyiceberg]'``), never in icefloe's
environment. Catalog and credentials come from the environment that run.py sets:
``ICEBERG_CATALOG__ICEBERG_CATALOG_TYPE=sql``, ``ICEBERG_CATALOG__ICEBERG_CATALOG_CONFIG`` (JSON with
``uri``, ``warehouse``, ``s3.*``), ``SOURCES__FILESYSTEM__CREDENTIALS__*`` and
``DESTINATION__FILESYSTEM__CREDENTIALS__*``. Prints one JSON line with the extract, normalize and
load times; run.py times the whole process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bucket-url", required=True)
    p.add_argument("--glob", required=True)
    p.add_argument("--format", choices=("jsonl", "csv"), required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--destination-url", required=True)
    p.add_argument("--pipeline", required=True)
    args = p.parse_args(argv)

    import dlt
    from dlt.sources.filesystem import filesystem, read_csv, read_jsonl

    files = filesystem(bucket_url=args.bucket_url, file_glob=args.glob)
    reader = read_jsonl() if args.format == "jsonl" else read_csv()
    resource = (files | reader).with_name(args.table)
    resource.apply_hints(table_format="iceberg", write_disposition="append")
    pipeline = dlt.pipeline(
        pipeline_name=args.pipeline,
        destination=dlt.destinations.filesystem(bucket_url=args.destination_url),
        dataset_name=args.dataset,
    )
    t0 = time.perf_counter()
    pipeline.extract(resource)
    t1 = time.perf_counter()
    pipeline.normalize()
    t2 = time.perf_counter()
    info = pipeline.load()
    t3 = time.perf_counter()
    info.raise_on_failed_jobs()
    print(
        json.dumps(
            {
                "extract_s": round(t1 - t0, 2),
                "normalize_s": round(t2 - t1, 2),
                "load_s": round(t3 - t2, 2),
                "total_s": round(t3 - t0, 2),
                "dlt": dlt.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
