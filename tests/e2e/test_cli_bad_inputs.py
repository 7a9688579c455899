"""A batch with bad files through the CLI: exit 3 (PARTIAL), right counters, the bad files FAILED
one by one with a readable reason, the good ones in the table, no traceback."""

from __future__ import annotations

import gzip
import io
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog

from tests.support.cli import cli, create, one_json, run_json

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def test_partial_run_of_csv_files(
    icefloe_env: dict[str, str], catalog: SqlCatalog, bucket: str, put_objects: PutObjects
) -> None:
    objects = {
        "landing/part-000.csv": b"id,name\n1,ann\n2,bob\n",
        "landing/part-001.csv": b"",  # empty: 0 records, SUCCESS
        "landing/part-002.csv.gz": b"garbage, not gzip",
        "landing/part-003.csv": b"id,name\n3,cy\n4,dee,extra\n",
        "landing/part-004.csv": "id,name\n5,Jürgen\n".encode("latin-1"),
        "landing/part-005.csv.gz": gzip.compress(b"id,name\n6,eve\n7,fay\n8,gus\n"),
    }
    bad = {
        "landing/part-002.csv.gz": "CorruptFile",
        "landing/part-003.csv": "MalformedCSV",
        "landing/part-004.csv": "EncodingError",
    }
    put_objects(bucket, objects)
    create(icefloe_env, "landing", f"s3://{bucket}/landing/", fmt="csv")

    summary = run_json(icefloe_env, "landing", expect=3)

    assert summary["status"] == "PARTIAL"
    assert summary["files_discovered"] == summary["files_new"] == 6
    assert (summary["files_succeeded"], summary["files_failed"]) == (3, 3)
    assert summary["records_ingested"] == 5
    assert summary["snapshots_committed"] == 1
    failed = one_json(cli(icefloe_env, "files", "landing", "--status", "FAILED", "--json").stdout)
    assert {f["file_path"]: f["error_type"] for f in failed} == {f"s3://{bucket}/{k}": t for k, t in bad.items()}
    for f in failed:
        assert f["status"] == "FAILED"
        assert f["file_path"] in f["error_message"] and "\n" not in f["error_message"], f
    data = catalog.load_table("e2e.landing").scan().to_arrow()
    assert sorted(data.column("id").to_pylist()) == [1, 2, 6, 7, 8]


def test_partial_run_of_parquet_files(
    icefloe_env: dict[str, str], catalog: SqlCatalog, bucket: str, put_objects: PutObjects
) -> None:
    def parquet(ids: list[int]) -> bytes:
        buf = io.BytesIO()
        pq.write_table(pa.table({"id": pa.array(ids, pa.int64())}), buf)
        return buf.getvalue()

    put_objects(
        bucket,
        {
            "pq/a.parquet": parquet([1, 2]),
            "pq/b.parquet": parquet(list(range(3, 500)))[:200],  # truncated
            "pq/c.parquet": b"",  # zero bytes
            "pq/d.parquet": parquet([500]),
        },
    )
    create(icefloe_env, "pq", f"s3://{bucket}/pq/", fmt="parquet")

    summary = run_json(icefloe_env, "pq", expect=3)

    assert (summary["status"], summary["files_succeeded"], summary["files_failed"]) == ("PARTIAL", 2, 2)
    assert summary["records_ingested"] == 3
    failed = one_json(cli(icefloe_env, "files", "pq", "--status", "FAILED", "--json").stdout)
    assert {f["file_path"]: f["error_type"] for f in failed} == {
        f"s3://{bucket}/pq/b.parquet": "CorruptFile",
        f"s3://{bucket}/pq/c.parquet": "CorruptFile",
    }
    assert sorted(catalog.load_table("e2e.pq").scan().to_arrow().column("id").to_pylist()) == [1, 2, 500]
