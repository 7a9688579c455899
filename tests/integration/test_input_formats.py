"""Input formats read into the table: CSV options, JSON lines, Parquet, gzip/zstd/bz2 compression."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.types import BooleanType, DoubleType, LongType, StringType, TimestamptzType

from icefloe.runtime import Runtime
from icefloe.schema_documents import load_schema_file
from tests.support.inprocess import files, ingest, run
from tests.support.tables import jsonl, load_table, rows

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return bytes(sink.getvalue().to_pybytes())


CODECS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda b: b,
    ".gz": gzip.compress,
    ".zst": zstd,
    ".bz2": bz2.compress,
}


def user_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The table's rows without icefloe's metadata columns, sorted by id."""
    data = table.drop_columns(["_source_file", "_ingested_at"]).to_pylist()
    return sorted(data, key=lambda r: r["id"])


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_plain_and_compressed_files_of_one_ingestion(
    rt: Runtime, bucket: str, put_objects: PutObjects, fmt: str
) -> None:
    objects: dict[str, bytes] = {}
    expected: list[dict[str, Any]] = []
    for n, (suffix, compress) in enumerate(CODECS.items()):
        records = [{"id": n * 100 + i, "name": f"{suffix or 'plain'}-{i}"} for i in range(50)]
        if fmt == "jsonl":
            body = jsonl(records)
        else:
            body = ("id,name\n" + "".join(f"{r['id']},{r['name']}\n" for r in records)).encode()
        objects[f"in/part-{n}.{fmt}{suffix}"] = compress(body)
        expected.extend(records)
    put_objects(bucket, objects)
    ingest(rt, "codecs", f"s3://{bucket}/in/", format=fmt)

    result = run(rt, "codecs")

    assert result.status == "SUCCESS", result.error_message
    assert (result.files_succeeded, result.records_ingested) == (4, 200)
    assert result.snapshots_committed == 1
    assert user_rows(rows(rt, "it.codecs")) == expected
    by_file = {k: v["records_ingested"] for k, v in files(rt, "codecs").items()}
    assert by_file == {f"s3://{bucket}/{k}": 50 for k in objects}


def test_csv_delimiter_and_quote_char(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {"in/semi.csv": b"id;name;note\n1;ann;'a;b'\n2;bob;plain\n"})
    ingest(rt, "semi", f"s3://{bucket}/in/", format="csv", csv_delimiter=";", csv_quote_char="'")

    result = run(rt, "semi")

    assert result.status == "SUCCESS", result.error_message
    assert user_rows(rows(rt, "it.semi")) == [
        {"id": 1, "name": "ann", "note": "a;b"},
        {"id": 2, "name": "bob", "note": "plain"},
    ]


SHORT_SCHEMA = {"id": "long", "name": "string", "score": "double", "ok": "boolean"}
ICEBERG_SCHEMA = {
    "type": "struct",
    "schema-id": 0,
    "fields": [
        {"id": n, "name": name, "type": type_, "required": False}
        for n, (name, type_) in enumerate(SHORT_SCHEMA.items(), start=1)
    ],
}


@pytest.mark.parametrize("schema_doc", [SHORT_SCHEMA, ICEBERG_SCHEMA], ids=["short-form", "iceberg-form"])
def test_csv_without_header_takes_the_schema_names_and_types(
    rt: Runtime, bucket: str, put_objects: PutObjects, tmp_path: Path, schema_doc: dict[str, Any]
) -> None:
    """Without a header, the columns are the schema file's columns, in the file's order."""
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema_doc))
    put_objects(bucket, {"in/a.tsv.gz": gzip.compress(b"1\tann\t1.5\ttrue\n2\tbob\t\tfalse\n")})
    ingest(
        rt,
        "headless",
        f"s3://{bucket}/in/",
        format="csv",
        csv_delimiter="\t",
        csv_header=False,
        schema=load_schema_file(str(schema_file)),
    )

    result = run(rt, "headless")

    assert result.status == "SUCCESS", result.error_message
    assert result.records_ingested == 2  # the first line is data, not a header
    table = load_table(rt, "it.headless")
    types = {f.name: type(f.field_type) for f in table.schema().fields}
    assert types == {
        "id": LongType,
        "name": StringType,
        "score": DoubleType,
        "ok": BooleanType,
        "_source_file": StringType,
        "_ingested_at": TimestamptzType,
    }
    assert user_rows(table.scan().to_arrow()) == [
        {"id": 1, "name": "ann", "score": 1.5, "ok": True},
        {"id": 2, "name": "bob", "score": None, "ok": False},
    ]


def test_parquet_files_with_several_row_groups(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    objects: dict[str, bytes] = {}
    expected: list[dict[str, Any]] = []
    for n in range(3):
        records = [
            {"id": n * 1000 + i, "amount": i / 4, "at": base + dt.timedelta(minutes=i), "flag": i % 2 == 0}
            for i in range(1000)
        ]
        buf = io.BytesIO()
        schema = pa.schema(
            [("id", pa.int64()), ("amount", pa.float64()), ("at", pa.timestamp("us", "UTC")), ("flag", pa.bool_())]
        )
        pq.write_table(pa.Table.from_pylist(records, schema=schema), buf, row_group_size=300)
        objects[f"in/part-{n}.parquet"] = buf.getvalue()
        expected.extend(records)
    put_objects(bucket, objects)
    ingest(rt, "pq", f"s3://{bucket}/in/", format="parquet")

    result = run(rt, "pq")

    assert result.status == "SUCCESS", result.error_message
    assert (result.files_succeeded, result.records_ingested) == (3, 3000)
    assert user_rows(rows(rt, "it.pq")) == expected
