"""Bad input files: each one FAILED with its own error type and a one-line message naming it,
while the good files of the same batch are committed."""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from icefloe.runtime import Runtime
from icefloe.schema_documents import load_schema_file
from tests.support.inprocess import files, ingest, run
from tests.support.tables import icefloe_snapshots, ids_by_file, jsonl, load_table

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def parquet_bytes(ids: list[int]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "name": [f"n{i}" for i in ids]}), buf)
    return buf.getvalue()


def gzip_with_flipped_byte(data: bytes) -> bytes:
    body = bytearray(gzip.compress(data))
    body[len(body) // 2] ^= 0xFF
    return bytes(body)


CSV_ROWS = "".join(f"{i},name-{i}\n" for i in range(100, 400))


@dataclass
class Case:
    format: str
    good: dict[str, list[int]]  # key → ids it holds
    bad: dict[str, str]  # key → expected error_type
    objects: dict[str, bytes]
    schema: dict[str, str] | None = None


CASES = {
    "csv": Case(
        format="csv",
        good={"good.csv": [1, 2], "good.csv.gz": list(range(100, 400))},
        bad={
            "corrupt.csv.gz": "CorruptFile",  # not gzip at all
            "bitflip.csv.gz": "CorruptFile",  # gzip with a damaged deflate stream
            "truncated.csv.gz": "CorruptFile",  # gzip cut short (interrupted upload)
            "columns.csv": "MalformedCSV",  # a row with one column too many
            "latin1.csv": "EncodingError",  # not UTF-8
        },
        objects={
            "good.csv": b"id,name\n1,ann\n2,bob\n",
            "good.csv.gz": gzip.compress(b"id,name\n" + CSV_ROWS.encode()),
            "corrupt.csv.gz": b"this is not gzip\n",
            "bitflip.csv.gz": gzip_with_flipped_byte(b"id,name\n" + CSV_ROWS.encode()),
            "truncated.csv.gz": gzip.compress(b"id,name\n" + CSV_ROWS.encode())[:200],
            "columns.csv": b"id,name\n3,cy\n4,dee,extra\n5,eve\n",
            "latin1.csv": "id,name\n6,Müller\n".encode("latin-1"),
        },
    ),
    "jsonl": Case(
        format="jsonl",
        good={"good.jsonl": [1, 2, 3]},
        bad={
            "malformed.jsonl": "MalformedJSON",
            "latin1.jsonl": "EncodingError",
            "corrupt.jsonl.gz": "CorruptFile",
        },
        objects={
            "good.jsonl": jsonl([{"id": i, "name": f"n{i}"} for i in (1, 2, 3)]),
            "malformed.jsonl": b'{"id": 4, "name": "d"}\n{"id": 5, "name": \n{"id": 6}\n',
            "latin1.jsonl": '{"id": 7, "name": "Müller"}\n'.encode("latin-1"),
            "corrupt.jsonl.gz": b"\x1f\x8b\x08\x00 not really gzip",
        },
    ),
    "parquet": Case(
        format="parquet",
        good={"good.parquet": [1, 2, 3]},
        bad={"truncated.parquet": "CorruptFile", "zero.parquet": "CorruptFile"},
        objects={
            "good.parquet": parquet_bytes([1, 2, 3]),
            "truncated.parquet": parquet_bytes(list(range(10, 1000)))[:300],
            "zero.parquet": b"",
        },
    ),
    "csv-schema": Case(
        format="csv",
        schema={"id": "long", "name": "string"},
        good={"good.csv": [1, 2]},
        bad={"abc.csv": "SchemaMismatch"},
        objects={"good.csv": b"id,name\n1,ann\n2,bob\n", "abc.csv": b"id,name\n3,cy\nabc,dee\n"},
    ),
    "jsonl-schema": Case(
        format="jsonl",
        schema={"id": "long", "name": "string"},
        good={"good.jsonl": [1, 2]},
        bad={"abc.jsonl": "SchemaMismatch"},
        objects={
            "good.jsonl": jsonl([{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]),
            "abc.jsonl": jsonl([{"id": 3, "name": "cy"}, {"id": "abc", "name": "dee"}]),
        },
    ),
}


@pytest.mark.parametrize("case_name", list(CASES))
def test_bad_files_fail_alone_and_good_files_commit(
    rt: Runtime, bucket: str, put_objects: PutObjects, tmp_path: Path, case_name: str
) -> None:
    case = CASES[case_name]
    put_objects(bucket, {f"in/{k}": v for k, v in case.objects.items()})
    options: dict[str, Any] = {"format": case.format}
    if case.schema is not None:  # as `--schema FILE` gives it
        path = tmp_path / "schema.json"
        path.write_text(json.dumps(case.schema))
        options["schema"] = load_schema_file(str(path))
    ingest(rt, "bad", f"s3://{bucket}/in/", **options)

    result = run(rt, "bad")

    assert result.status == "PARTIAL", result.error_message
    assert (result.files_new, result.files_succeeded, result.files_failed) == (
        len(case.objects),
        len(case.good),
        len(case.bad),
    )
    assert result.records_ingested == sum(len(v) for v in case.good.values())
    assert result.snapshots_committed == 1  # the good files of the batch, together

    ledger = files(rt, "bad")
    uri = {k: f"s3://{bucket}/in/{k}" for k in case.objects}
    observed = {k: ledger[uri[k]]["error_type"] for k in case.bad}
    assert observed == case.bad, [(ledger[uri[k]]["error_type"], ledger[uri[k]]["error_message"]) for k in case.bad]
    for key in case.bad:
        entry = ledger[uri[key]]
        message = entry["error_message"]
        assert entry["status"] == "FAILED"
        assert entry["retry_count"] == 1
        assert message and "\n" not in message and len(message) <= 600, message
        assert uri[key] in message, message
        assert "Traceback" not in message
    for key, ids in case.good.items():
        assert (ledger[uri[key]]["status"], ledger[uri[key]]["records_ingested"]) == ("SUCCESS", len(ids))

    table = load_table(rt, "it.bad")
    assert ids_by_file(table.scan().to_arrow()) == {uri[k]: ids for k, ids in case.good.items()}
    [props] = icefloe_snapshots(table)
    assert props["icefloe.file-count"] == str(len(case.good))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("order", ["empty-first", "empty-last"])
def test_empty_text_files_succeed_with_zero_records(
    rt: Runtime, bucket: str, put_objects: PutObjects, fmt: str, order: str
) -> None:
    """An empty CSV or JSON lines file (plain or compressed) is a valid file of 0 records, wherever
    it falls in the batch (keys are listed, hence claimed, in lexical order)."""
    empty_prefix, good_prefix = ("a", "b") if order == "empty-first" else ("b", "a")
    good_body = b"id,name\n1,ann\n2,bob\n" if fmt == "csv" else jsonl([{"id": 1}, {"id": 2}])
    objects = {
        f"in/{empty_prefix}-empty.{fmt}": b"",
        f"in/{empty_prefix}-empty.{fmt}.gz": gzip.compress(b""),
        f"in/{good_prefix}-good.{fmt}": good_body,
    }
    put_objects(bucket, objects)
    ingest(rt, "empty", f"s3://{bucket}/in/", format=fmt)

    result = run(rt, "empty")

    assert result.status == "SUCCESS", result.error_message
    assert (result.files_succeeded, result.files_failed, result.records_ingested) == (3, 0, 2)
    ledger = files(rt, "empty")
    for key in objects:
        entry = ledger[f"s3://{bucket}/{key}"]
        assert entry["status"] == "SUCCESS", entry["error_message"]
        assert entry["records_ingested"] == (0 if "empty" in key else 2)
    table = load_table(rt, "it.empty")
    assert ids_by_file(table.scan().to_arrow()) == {f"s3://{bucket}/in/{good_prefix}-good.{fmt}": [1, 2]}
    assert "id" in table.schema().column_names  # the table's schema comes from the data, not the empty file
