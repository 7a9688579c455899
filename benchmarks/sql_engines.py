"""`icefloe sql`'s engine choice, measured: DuckDB's iceberg_scan vs pyiceberg scan → Arrow → DuckDB.

Builds a table of ``--rows`` rows in ``--files`` data files (pyiceberg SQL catalog on SQLite, local
warehouse), then times three queries both ways and checks they give the same answer.

    .venv/bin/python benchmarks/sql_engines.py --rows 5000000 --files 10
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog.sql import SqlCatalog

from icefloe import query

QUERIES = {
    "count": "SELECT count(*) FROM bench.events",
    "group by": "SELECT kind, count(*), round(sum(amount), 2) FROM bench.events GROUP BY 1 ORDER BY 1",
    "selective": "SELECT id, amount FROM bench.events WHERE id BETWEEN 1000 AND 1010 ORDER BY id",
}


def build(root: Path, rows: int, files: int) -> SqlCatalog:
    catalog = SqlCatalog("bench", uri=f"sqlite:///{root}/catalog.db", warehouse=(root / "wh").as_uri())
    catalog.create_namespace("bench")
    per = rows // files
    schema = pa.schema([("id", pa.int64()), ("kind", pa.string()), ("amount", pa.float64()), ("note", pa.string())])
    table = catalog.create_table("bench.events", schema=schema)
    for f in range(files):
        ids = pa.array(range(f * per, (f + 1) * per), pa.int64())
        kinds = pc.cast(pc.bit_wise_and(ids, 7), pa.string())
        amount = pc.divide(pc.cast(pc.bit_wise_and(ids, 1023), pa.float64()), 10.0)
        note = pa.array(["some text of a row"] * per)
        table.append(pa.table([ids, kinds, amount, note], schema=schema))  # one snapshot, one file each
    return catalog


def via_arrow(catalog: SqlCatalog, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    events = catalog.load_table("bench.events").scan().to_arrow()  # the whole table in memory
    con.execute("CREATE SCHEMA bench")
    con.register("events_arrow", events)
    con.execute("CREATE VIEW bench.events AS SELECT * FROM events_arrow")
    return con.execute(sql).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--only", choices=["scan", "arrow"], help="one engine alone, for its peak RSS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        catalog = build(Path(tmp), args.rows, args.files)
        print(f"table: {args.rows:,} rows in {args.files} data files")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS after building the table: {base:.0f} MiB")
        for name, sql in QUERIES.items():
            t0 = time.perf_counter()
            scanned = query.run(catalog, sql, limit=None).rows if args.only != "arrow" else []
            t1 = time.perf_counter()
            arrow = via_arrow(catalog, sql) if args.only != "scan" else []
            t2 = time.perf_counter()
            same = [tuple(r) for r in scanned] == [tuple(r) for r in arrow]
            print(f"{name:10} iceberg_scan {t1 - t0:6.2f} s   pyiceberg→Arrow {t2 - t1:6.2f} s   same result: {same}")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
