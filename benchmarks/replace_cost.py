"""What replacing one changed source file costs: 12 CSV files of 25,000 rows, one of them replaced.

    .venv/bin/python benchmarks/replace_cost.py [--icefloe PATH] [--files 12] [--rows 25000]

Starts SeaweedFS and an embedded PostgreSQL (as ``run.py`` does), writes the files to
``s3://landing/replace/``, runs ``icefloe run`` once, rewrites one file with new rows (same size)
and runs again (``--on-change replace``, the default). Prints, as JSON, the Iceberg snapshot
summaries of the second run: ``deleted-records`` (rows removed), ``added-records`` (rows written,
the changed file's plus any rewritten by copy-on-write), ``removed-files-size``, and the run's time.
``--icefloe`` picks the CLI (e.g. another checkout's ``.venv/bin/icefloe`` for a before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # the harness: its services and environment


def csv_file(first_id: int, rows: int) -> bytes:
    lines = ["id,name,amount"]
    lines += [
        f"{i},customer-{i:012d}-abcdefghijklmnopqrstuvwxyz,{i % 1000}.25" for i in range(first_id, first_id + rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def summaries(db_url: str, endpoint: str, ident: str) -> list[dict[str, Any]]:
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "icefloe",
        uri=db_url,
        warehouse=bench.WAREHOUSE,
        **{
            "s3.endpoint": endpoint,
            "s3.access-key-id": bench.ACCESS_KEY,
            "s3.secret-access-key": bench.SECRET_KEY,
            "s3.region": bench.REGION,
        },
    )
    table = catalog.load_table(ident)
    out = []
    for snap in table.metadata.snapshots:
        s = snap.summary
        props = dict(s.additional_properties) if s is not None else {}
        out.append({"operation": str(s.operation.value) if s is not None else None, **props})
    catalog.engine.dispose()
    return out


def timed_json(argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    return round(time.perf_counter() - t0, 2), json.loads(proc.stdout.splitlines()[-1])


def maintenance_figures(
    args: argparse.Namespace, svc: bench.Services, env: dict[str, str], ident: str, before: int
) -> dict[str, Any]:
    """`icefloe maintain` timings, and what a replace costs once the table is compacted."""
    out: dict[str, Any] = {}

    def replace_one(changed: int, first_id: int) -> dict[str, int]:
        before = len(summaries(svc.db_url("replace"), svc.endpoint, ident))
        body = csv_file(first_id + changed * args.rows, args.rows)
        svc.s3.put_object(Bucket=bench.LANDING, Key=f"replace/f{changed:02d}.csv", Body=body)
        subprocess.run([args.icefloe, "run", "replace", "--json"], env=env, check=True, capture_output=True)
        snaps = summaries(svc.db_url("replace"), svc.endpoint, ident)[before:]
        added = sum(int(s.get("added-records", 0)) for s in snaps)
        return {
            "deleted_records": sum(int(s.get("deleted-records", 0)) for s in snaps),
            "rows_rewritten": added - args.rows,
        }

    # The default replace window (1d) keeps the one-source files of these fresh sources apart...
    seconds, report = timed_json([args.icefloe, "maintain", "replace", "--json"], env)
    out["replace_table"] = {"seconds": seconds, "compaction": report["compaction"], "health": report["health"]}
    out["replace_after_compaction"] = replace_one(args.files // 2 + 1, 20_000_000)
    # ... past the window (0 here) they are packed together, and a replace rewrites the bin.
    seconds, report = timed_json([args.icefloe, "maintain", "replace", "--replace-window", "0", "--json"], env)
    out["replace_table_window_0"] = {"seconds": seconds, "compaction": report["compaction"], "health": report["health"]}
    out["replace_after_compaction_window_0"] = replace_one(args.files // 2 + 2, 30_000_000)
    for n in range(args.maintain):
        line = json.dumps({"id": n, "payload": f"record-{n}"}) + "\n"
        svc.s3.put_object(Bucket=bench.LANDING, Key=f"tiny/t{n:06d}.jsonl", Body=line.encode())
    tiny = ["ingestion", "create", "tiny", "--source", f"s3://{bench.LANDING}/tiny/", "--format", "jsonl"]
    create = [args.icefloe, *tiny, "--table", "bench.tiny", "--max-files-per-commit", "2"]
    subprocess.run(create, env=env, check=True, capture_output=True)
    subprocess.run([args.icefloe, "run", "tiny", "--json"], env=env, check=True, capture_output=True)
    seconds, report = timed_json([args.icefloe, "maintain", "tiny", "--json"], env)
    out["tiny_files"] = {"files": args.maintain, "seconds": seconds, **report}
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--icefloe", default=str(Path(sys.executable).parent / "icefloe"))
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--rows", type=int, default=25_000)
    parser.add_argument(
        "--maintain",
        type=int,
        default=0,
        metavar="N",
        help="also time `icefloe maintain`: on this table (then replace another file after compaction) "
        "and on N tiny JSONL files loaded two per commit (N/2 small data files)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="icefloe-replace-") as tmp, bench.services(Path(tmp), 0) as svc:
        svc.create_database("replace")
        for n in range(args.files):
            svc.s3.put_object(
                Bucket=bench.LANDING, Key=f"replace/f{n:02d}.csv", Body=csv_file(n * args.rows, args.rows)
            )
        (Path(tmp) / "home").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEFLOE_", "PYICEBERG_", "AWS_"))}
        env.update(
            ICEFLOE_DATABASE_URL=svc.db_url("replace"),
            ICEFLOE_HOME=str(Path(tmp) / "home"),
            ICEFLOE_WAREHOUSE=bench.WAREHOUSE,
            AWS_ENDPOINT_URL=svc.endpoint,
            AWS_ACCESS_KEY_ID=bench.ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=bench.SECRET_KEY,
            AWS_REGION=bench.REGION,
        )
        ident = "bench.replace"
        create = ["ingestion", "create", "replace", "--source", f"s3://{bench.LANDING}/replace/", "--format", "csv"]
        subprocess.run([args.icefloe, *create, "--table", ident], env=env, check=True, capture_output=True)
        first = subprocess.run([args.icefloe, "run", "replace", "--json"], env=env, check=True, capture_output=True)
        before = len(summaries(svc.db_url("replace"), svc.endpoint, ident))
        changed = args.files // 2
        body = csv_file(10_000_000 + changed * args.rows, args.rows)
        svc.s3.put_object(Bucket=bench.LANDING, Key=f"replace/f{changed:02d}.csv", Body=body)
        t0 = time.perf_counter()
        second = subprocess.run([args.icefloe, "run", "replace", "--json"], env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        snaps = summaries(svc.db_url("replace"), svc.endpoint, ident)[before:]

        def total(key: str) -> int:
            return sum(int(s.get(key, 0)) for s in snaps)

        report = {
            "icefloe": args.icefloe,
            "files": args.files,
            "rows_per_file": args.rows,
            "changed_file_bytes": len(body),
            "first_run_snapshots": json.loads(first.stdout.splitlines()[-1]).get("snapshots_committed"),
            "replace_run_seconds": round(seconds, 2),
            "deleted_records": total("deleted-records"),
            "added_records": total("added-records"),
            "rows_rewritten": total("added-records") - args.rows,
            "removed_files_size": total("removed-files-size"),
            "added_files_size": total("added-files-size"),
            "snapshots": snaps,
            "load_average_1m": os.getloadavg()[0],
            "run_json": json.loads(second.stdout.splitlines()[-1]),
        }
        if args.maintain:
            report["maintenance"] = maintenance_figures(args, svc, env, ident, before=len(snaps) + before)
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
