"""Hostile input: files written to break the parser, the converter or the table. Each is a real
object in real S3, ingested by the worker; each must end FAILED with a one-line error naming the file
and the cause, while the good files of its batch commit, the table stays writable and readable, and
nothing is lost or doubled."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from icefloe.runtime import Runtime
from tests.support.inprocess import files, ingest, run
from tests.support.tables import ids_by_file, jsonl, load_table

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def nested(depth: int) -> bytes:
    return ('{"id": 9, "x": ' + '{"a": ' * depth + "1" + "}" * depth + "}\n").encode()


def parquet_with_duplicate_names() -> bytes:
    buf = io.BytesIO()
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["id", "id"])
    pq.write_table(table, buf)
    return buf.getvalue()


GOOD_JSONL = jsonl([{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}])
GOOD_CSV = b"id,name\n1,ann\n2,bob\n"

# key → (body, error_type, words the one-line message must hold)
JSONL_CASES: dict[str, tuple[bytes, str, str]] = {
    "null-first.jsonl": (b'null\n{"id": 3}\n', "MalformedJSON", "line 1 is `null`"),
    "null-middle.jsonl": (b'{"id": 3}\nnull\n{"id": 4}\n', "MalformedJSON", "line 2 is `null`"),
    "deep-300.jsonl": (nested(300), "InvalidSchema", "nested more than 32 levels"),
    "deep-10000.jsonl": (nested(10_000), "InvalidSchema", "nested more than 32 levels"),
    "deep-120.jsonl": (nested(120), "InvalidSchema", "nested more than 32 levels"),
    "empty-key.jsonl": (b'{"id": 3, "": 1}\n', "InvalidSchema", "empty name"),
    "dotted.jsonl": (b'{"id": 3, "a.b": 1, "a": {"b": 2}}\n', "InvalidSchema", "'a.b' appears twice"),
    "reserved.jsonl": (b'{"id": 3, "_source_file": "mine"}\n', "InvalidSchema", "'_source_file'"),
    "reserved2.jsonl": (b'{"id": 3, "_ingested_at": 1}\n', "InvalidSchema", "'_ingested_at'"),
    "utf16.jsonl": ('{"id": 3}\n'.encode("utf-16"), "EncodingError", "not UTF-8"),
    # A column new to the table whose integers overflow a long: inferred as double, it would round.
    "bigint-new-column.jsonl": (
        b'{"id": 3, "huge": 5}\n{"id": 4, "huge": -9223372036854775809}\n',
        "SchemaMismatch",
        "'huge' holds -9.223372036854776e+18",
    ),
}
CSV_CASES: dict[str, tuple[bytes, str, str]] = {
    "dup.csv": (b"a,a,b\n1,2,3\n", "InvalidSchema", "'a' appears twice"),
    "empty-header.csv": (b"id,,b\n1,2,3\n", "InvalidSchema", "empty name"),
}


def _assert_failed_alone(
    rt: Runtime, bucket: str, name: str, cases: dict[str, tuple[bytes, str, str]], good: dict[str, list[int]]
) -> None:
    ledger = files(rt, name)
    for key, (_, error_type, words) in cases.items():
        entry = ledger[f"s3://{bucket}/in/{key}"]
        message = entry["error_message"]
        assert (entry["status"], entry["error_type"]) == ("FAILED", error_type), (key, message)
        assert f"s3://{bucket}/in/{key}" in message and words in message, message
        assert "\n" not in message and len(message) <= 600 and "Traceback" not in message
    table = load_table(rt, f"it.{name}")
    assert ids_by_file(table.scan().to_arrow()) == {f"s3://{bucket}/in/{k}": ids for k, ids in good.items()}
    assert all(f.name for f in table.schema().fields)
    assert not {"_source_file", "_ingested_at"} & {f.name for f in table.schema().fields[:-2]}


@pytest.mark.parametrize(
    ("fmt", "cases", "good"),
    [("jsonl", JSONL_CASES, GOOD_JSONL), ("csv", CSV_CASES, GOOD_CSV)],
    ids=["jsonl", "csv"],
)
def test_hostile_files_fail_alone_and_the_table_stays_usable(
    rt: Runtime, bucket: str, put_objects: PutObjects, fmt: str, cases: dict[str, tuple[bytes, str, str]], good: bytes
) -> None:
    # The good file sorts first and last: it creates the table, and it follows every bad file.
    objects = {f"in/a-good.{fmt}": good, **{f"in/{k}": v[0] for k, v in cases.items()}}
    put_objects(bucket, objects)
    ingest(rt, "hostile", f"s3://{bucket}/in/", format=fmt)

    result = run(rt, "hostile")

    assert result.status == "PARTIAL", result.error_message
    assert (result.files_succeeded, result.files_failed) == (1, len(cases))
    _assert_failed_alone(rt, bucket, "hostile", cases, {f"a-good.{fmt}": [1, 2]})

    # The table was never poisoned: the next file is written and read back.
    put_objects(bucket, {f"in/z-later.{fmt}": good})
    assert run(rt, "hostile").status == "SUCCESS"
    _assert_failed_alone(rt, bucket, "hostile", cases, {f"a-good.{fmt}": [1, 2], f"z-later.{fmt}": [1, 2]})


def test_parquet_with_duplicate_column_names_fails_alone(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2]}), buf)
    put_objects(bucket, {"in/a-good.parquet": buf.getvalue(), "in/dup.parquet": parquet_with_duplicate_names()})
    ingest(rt, "dupq", f"s3://{bucket}/in/", format="parquet")

    assert run(rt, "dupq").status == "PARTIAL"

    cases = {"dup.parquet": (b"", "InvalidSchema", "'id' appears twice")}
    _assert_failed_alone(rt, bucket, "dupq", cases, {"a-good.parquet": [1, 2]})


def test_csv_null_is_only_an_empty_unquoted_field_unless_listed(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    body = b'id,country,note\n1,NA,N/A\n2,nan,#N/A\n3,null,NULL\n4,,""\n'
    put_objects(bucket, {"a/c.csv": body, "b/c.csv": body})
    ingest(rt, "nulls", f"s3://{bucket}/a/", format="csv")
    ingest(rt, "listed", f"s3://{bucket}/b/", format="csv", csv_null_values=["", "NA", "NULL"])

    assert run(rt, "nulls").status == "SUCCESS"
    assert run(rt, "listed").status == "SUCCESS"

    rows = sorted(load_table(rt, "it.nulls").scan().to_arrow().select(["id", "country", "note"]).to_pylist(), key=str)
    assert rows == [
        {"id": 1, "country": "NA", "note": "N/A"},
        {"id": 2, "country": "nan", "note": "#N/A"},
        {"id": 3, "country": "null", "note": "NULL"},
        {"id": 4, "country": None, "note": ""},  # empty unquoted: NULL; quoted "": an empty text
    ]
    listed = load_table(rt, "it.listed").scan().to_arrow().select(["id", "country", "note"]).to_pylist()
    assert sorted(listed, key=str) == [
        {"id": 1, "country": None, "note": "N/A"},
        {"id": 2, "country": "nan", "note": "#N/A"},
        {"id": 3, "country": "null", "note": None},
        {"id": 4, "country": None, "note": ""},
    ]


def test_values_are_stored_as_written_or_the_file_fails_naming_the_column(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"in/1-first.jsonl": jsonl([{"id": 1, "n": 5, "s": "text"}])})
    ingest(rt, "values", f"s3://{bucket}/in/", format="jsonl")
    assert run(rt, "values").status == "SUCCESS"  # the table: id long, n long, s string

    bad: dict[str, tuple[dict[str, Any], str]] = {
        "2-date-into-long.jsonl": ({"id": 2, "n": "2024-01-01"}, "'n'"),
        "3-bool-into-long.jsonl": ({"id": 3, "n": True}, "'n'"),
        "4-overflow.jsonl": ({"id": 4, "n": -9223372036854775809}, "'n'"),
    }
    objects = {f"in/{k}": jsonl([v]) for k, (v, _) in bad.items()}
    objects["in/5-date-into-string.jsonl"] = jsonl([{"id": 5, "s": "2024-01-01"}, {"id": 6, "s": "2024-01-02"}])
    put_objects(bucket, objects)

    result = run(rt, "values")

    assert (result.files_succeeded, result.files_failed) == (1, 3), result.error_message
    ledger = files(rt, "values")
    for key, (_, column) in bad.items():
        entry = ledger[f"s3://{bucket}/in/{key}"]
        assert (entry["status"], entry["error_type"]) == ("FAILED", "SchemaMismatch"), entry["error_message"]
        assert column in entry["error_message"] and key in entry["error_message"], entry["error_message"]
    rows = load_table(rt, "it.values").scan().to_arrow().select(["id", "n", "s"]).to_pylist()
    assert sorted(rows, key=lambda r: r["id"]) == [
        {"id": 1, "n": 5, "s": "text"},
        {"id": 5, "n": None, "s": "2024-01-01"},
        {"id": 6, "n": None, "s": "2024-01-02"},
    ]


def test_a_date_like_text_column_is_kept_as_written_within_one_batch(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    """The table is created by the first file while the second is already parsed (inferring a
    timestamp): the second is read again with the table's types, not cast to text."""
    put_objects(
        bucket,
        {
            "in/a.jsonl": jsonl([{"id": 1, "s": "hello"}]),
            "in/b.jsonl": jsonl([{"id": 2, "s": "2024-01-01"}]),
            "in/c.csv.jsonl": jsonl([{"id": 3, "s": "2024-01-01T10:00:00"}]),
        },
    )
    ingest(rt, "asis", f"s3://{bucket}/in/", format="jsonl")
    assert run(rt, "asis").status == "SUCCESS"
    rows = load_table(rt, "it.asis").scan().to_arrow().select(["id", "s"]).to_pylist()
    assert sorted(rows, key=lambda r: r["id"]) == [
        {"id": 1, "s": "hello"},
        {"id": 2, "s": "2024-01-01"},
        {"id": 3, "s": "2024-01-01T10:00:00"},
    ]


def test_decimal_over_precision_names_the_column(
    rt: Runtime, bucket: str, put_objects: PutObjects, tmp_path: Any
) -> None:
    from icefloe.schema_documents import load_schema_file

    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"id": "long", "price": "decimal(3,1)"}))
    put_objects(bucket, {"in/a.csv": b"id,price\n1,12.5\n", "in/b.csv": b"id,price\n2,1.234\n"})
    ingest(rt, "dec", f"s3://{bucket}/in/", format="csv", schema=load_schema_file(str(path)))

    assert run(rt, "dec").status == "PARTIAL"

    entry = files(rt, "dec")[f"s3://{bucket}/in/b.csv"]
    assert entry["error_type"] == "SchemaMismatch"
    assert "column 'price'" in entry["error_message"] and "CSV column #" not in entry["error_message"]


def test_a_column_that_turns_to_text_late_in_a_file_is_inferred_from_the_whole_file(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    """8 MB of CSV whose `code` column is numeric for 600,000 rows, then text."""
    rows = [f"{i},{i % 1000}\n" for i in range(800_000)]
    rows[650_000] = "650000,A-17\n"
    body = ("id,code\n" + "".join(rows)).encode()
    assert len(body) > 8_000_000
    put_objects(bucket, {"in/late.csv": body})
    ingest(rt, "late", f"s3://{bucket}/in/", format="csv")

    result = run(rt, "late")

    assert result.status == "SUCCESS", files(rt, "late")
    assert result.records_ingested == 800_000
    codes = load_table(rt, "it.late").scan(row_filter="id = 650000").to_arrow().column("code").to_pylist()
    assert codes == ["A-17"]


@pytest.mark.slow
def test_a_50mb_line_is_ingested_up_to_the_line_limit(
    rt: Runtime, bucket: str, put_objects: PutObjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed file (over 32 MiB) whose one line is 50 MB: read again with larger blocks up to
    ICEFLOE_MAX_LINE_BYTES (default 256 MiB); under a 16 MiB limit it fails naming the setting."""
    long_line = b'{"id": 2, "blob": "' + b"x" * (50 << 20) + b'"}\n'
    put_objects(bucket, {"in/long.jsonl": jsonl([{"id": 1, "blob": "short"}]) + long_line})
    ingest(rt, "long", f"s3://{bucket}/in/", format="jsonl")
    ingest(rt, "limited", f"s3://{bucket}/in/", format="jsonl")

    assert run(rt, "long").status == "SUCCESS", files(rt, "long")
    lengths = load_table(rt, "it.long").scan().to_arrow().column("blob").to_pylist()
    assert sorted(len(v) for v in lengths) == [5, 50 << 20]

    monkeypatch.setattr(rt, "settings", replace(rt.settings, max_line_bytes=16 << 20))
    assert run(rt, "limited").status == "PARTIAL"
    entry = files(rt, "limited")[f"s3://{bucket}/in/long.jsonl"]
    assert entry["error_type"] == "LineTooLong"
    assert "ICEFLOE_MAX_LINE_BYTES" in entry["error_message"] and "16777216" in entry["error_message"]


@pytest.mark.slow
def test_a_streamed_csv_whose_column_turns_to_text_after_the_first_block_names_row_and_schema(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    """Over 32 MiB, a CSV is streamed in 4 MiB blocks, its types inferred from the first (the table
    may already be made from them): a column that turns to text later fails the file, naming the
    column, where, and --schema; declared as text, the same file is ingested."""
    n = 3_200_000
    body = ("id,code\n" + "".join(f"{i},{i % 1000}\n" for i in range(n - 1)) + f"{n - 1},A-17\n").encode()
    assert len(body) > 33 << 20
    put_objects(bucket, {"in/big.csv": body})
    ingest(rt, "bigcsv", f"s3://{bucket}/in/", format="csv")
    ingest(rt, "declared", f"s3://{bucket}/in/", format="csv", schema={"id": "long", "code": "string"})

    assert run(rt, "bigcsv").status == "PARTIAL"
    message = files(rt, "bigcsv")[f"s3://{bucket}/in/big.csv"]["error_message"]
    assert "column 'code'" in message and "in the rows after row" in message and "--schema" in message, message
    assert load_table(rt, "it.bigcsv").scan().to_arrow().num_rows == 0  # nothing of the failed file

    result = run(rt, "declared")
    assert result.status == "SUCCESS", files(rt, "declared")
    assert result.records_ingested == n
    codes = load_table(rt, "it.declared").scan(row_filter=f"id = {n - 1}").to_arrow().column("code").to_pylist()
    assert codes == ["A-17"]


@pytest.mark.slow
def test_a_streamed_file_that_crashes_the_parser_fails_alone(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    """Over 32 MiB, a file is streamed through a parser child: JSON nested 100,000 deep (a segfault
    in pyarrow while it infers the first block's types), then 33 MB of good lines. The file is
    FAILED ParserCrashed, none of its rows land, the other file of the batch commits."""
    good_lines = b"".join(b'{"id": %d, "name": "padding-padding"}\n' % i for i in range(900_000))
    crasher = ('{"id": -1, "x": ' + "[" * 100_000 + "1" + "]" * 100_000 + "}\n").encode()
    assert len(good_lines) > 33 << 20
    put_objects(bucket, {"in/a-good.jsonl": GOOD_JSONL, "in/big-crash.jsonl": crasher + good_lines})
    ingest(rt, "bigcrash", f"s3://{bucket}/in/", format="jsonl")

    result = run(rt, "bigcrash")

    assert (result.status, result.files_succeeded, result.files_failed) == ("PARTIAL", 1, 1)
    entry = files(rt, "bigcrash")[f"s3://{bucket}/in/big-crash.jsonl"]
    assert entry["error_type"] == "ParserCrashed" and "SIGSEGV" in entry["error_message"], entry["error_message"]
    table = load_table(rt, "it.bigcrash")
    assert ids_by_file(table.scan().to_arrow()) == {f"s3://{bucket}/in/a-good.jsonl": [1, 2]}


def test_a_tiny_file_that_crashes_the_parser_fails_alone_within_its_group(
    rt: Runtime, bucket: str, put_objects: PutObjects, caplog: pytest.LogCaptureFixture
) -> None:
    """Tiny files are parsed in groups, one parser round trip each: when the parser dies on one
    member, which one is unknown, so the group's files are parsed again one by one. Only the
    crasher is FAILED ParserCrashed; the 39 others (two groups) land once each."""
    crasher = ('{"id": -1, "x": ' + "[" * 100_000 + "1" + "]" * 100_000 + "}\n").encode()
    objects = {f"in/f{n:02d}.jsonl": jsonl([{"id": 2 * n}, {"id": 2 * n + 1}]) for n in range(40) if n != 5}
    put_objects(bucket, {**objects, "in/f05.jsonl": crasher})
    ingest(rt, "groupcrash", f"s3://{bucket}/in/", format="jsonl")

    with caplog.at_level(logging.WARNING, logger="icefloe.isolation"):
        result = run(rt, "groupcrash")

    # The crasher's group was parsed in one round trip and, once the parser died, file by file.
    assert "parser process died on one of 32 files; each is parsed alone" in caplog.text, caplog.text

    assert (result.status, result.files_succeeded, result.files_failed) == ("PARTIAL", 39, 1)
    entry = files(rt, "groupcrash")[f"s3://{bucket}/in/f05.jsonl"]
    assert entry["error_type"] == "ParserCrashed" and "SIGSEGV" in entry["error_message"], entry["error_message"]
    table = load_table(rt, "it.groupcrash")
    assert ids_by_file(table.scan().to_arrow()) == {
        f"s3://{bucket}/{key}": [int(key[4:6]) * 2, int(key[4:6]) * 2 + 1] for key in objects
    }
