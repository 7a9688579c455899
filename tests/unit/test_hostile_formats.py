"""Pure checks against hostile input: schemas no table can hold, `null` lines (also across the
chunks of a streamed file), UTF-16, values that would change when cast, CSV NULLs."""

import gzip
import io

import pyarrow as pa
import pytest

from icefloe.errors import PermanentFileError
from icefloe.formats import ReadOptions, expanded, parse_whole, record_batches
from icefloe.schema import ValueChangedError, check_schema, conform


def nested_type(depth: int) -> pa.DataType:
    t: pa.DataType = pa.int64()
    for _ in range(depth):
        t = pa.struct([("a", t)])
    return t


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        (pa.schema([("", pa.int64())]), "empty name"),
        (pa.schema([("s", pa.struct([("", pa.int64())]))]), "empty name"),
        (pa.schema([("a", pa.int64()), ("a", pa.int64())]), "'a' appears twice"),
        (pa.schema([("a.b", pa.int64()), ("a", pa.struct([("b", pa.int64())]))]), "'a.b' appears twice"),
        (pa.schema([("_source_file", pa.string())]), "'_source_file'"),
        (pa.schema([("x", nested_type(33))]), "nested more than 32 levels"),
        (pa.schema([("x", nested_type(10_000))]), "nested more than 32 levels"),
    ],
)
def test_schemas_no_table_can_hold_are_refused(schema: pa.Schema, words: str) -> None:
    with pytest.raises(PermanentFileError, match="s3://b/k") as info:
        check_schema(schema, "s3://b/k", 32)
    assert info.value.error_type == "InvalidSchema" and words in str(info.value)


def test_nesting_up_to_the_limit_and_lists_and_maps_pass() -> None:
    check_schema(pa.schema([("x", nested_type(32))]), "k", 32)
    check_schema(pa.schema([("l", pa.list_(pa.map_(pa.string(), pa.int64())))]), "k", 32)


def stream(data: bytes, chunk: int) -> io.RawIOBase:
    class Chunks(io.RawIOBase):
        def __init__(self) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            part = self.inner.read(min(len(buffer), chunk))
            buffer[: len(part)] = part
            return len(part)

    return Chunks()


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b'null\n{"a": 1}\n', 1),
        (b'{"a": 1}\n  null \r\n{"a": 2}\n', 2),
        (b'{"a": 1}\n{"a": 2}\nnull', 3),
        (b'{"a": "null"}\n' * 3 + b"null\n", 4),
    ],
)
def test_a_null_line_is_refused_with_its_number(data: bytes, line: int, streamed: bool) -> None:
    options = ReadOptions(format="jsonl", block_size=1 << 20)
    with pytest.raises(PermanentFileError, match=f"line {line} is `null`") as info:
        if streamed:
            list(record_batches(stream(data, 7), "k.jsonl", options))
        else:
            parse_whole(data, "k.jsonl", options)
    assert info.value.error_type == "MalformedJSON"


def test_null_values_are_fine() -> None:
    table = parse_whole(b'{"a": null}\n{"a": 1}\n', "k.jsonl", ReadOptions(format="jsonl"))
    assert table.column("a").to_pylist() == [None, 1]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_and_utf32_are_encoding_errors(encoding: str) -> None:
    with pytest.raises(PermanentFileError) as info:
        parse_whole('{"a": 1}\n'.encode(encoding), "k.jsonl", ReadOptions(format="jsonl"))
    assert info.value.error_type == "EncodingError"


def test_csv_null_only_where_listed() -> None:
    body = b'a,b\nNA,"NA"\n,""\nnull,x\n'
    default = parse_whole(body, "k.csv", ReadOptions(format="csv"))
    assert default.to_pylist() == [{"a": "NA", "b": "NA"}, {"a": None, "b": ""}, {"a": "null", "b": "x"}]
    listed = parse_whole(body, "k.csv", ReadOptions(format="csv", csv_null_values=("", "NA")))
    assert listed.column("a").to_pylist() == [None, None, "null"]
    assert listed.column("b").to_pylist() == ["NA", "", "x"]  # quoted: never NULL


TARGET = pa.schema([("n", pa.int64()), ("s", pa.string()), ("_source_file", pa.string())])


@pytest.mark.parametrize(
    ("column", "values", "retry_as_text"),
    [
        ("n", pa.array([1704067200], pa.timestamp("s")), False),
        ("n", pa.array([True]), False),
        ("n", pa.array([-9.223372036854776e18]), False),
        ("s", pa.array([1704067200], pa.timestamp("s")), True),
    ],
)
def test_casts_that_change_the_value_are_refused(column: str, values: pa.Array, retry_as_text: bool) -> None:
    with pytest.raises(ValueChangedError, match=f"column '{column}'") as info:
        conform(pa.table({column: values}), TARGET, source_file="f", ingested_at=pa.scalar(0), file_uri="s3://b/k")
    assert info.value.retry_as_text is retry_as_text and info.value.error_type == "SchemaMismatch"


def test_casts_that_keep_the_value_pass() -> None:
    table = pa.table({"n": pa.array([1, 2], pa.int32()), "s": pa.array([True, False])})
    out = conform(table, TARGET, source_file="f", ingested_at=pa.scalar(0), file_uri="k")
    assert out.column("n").to_pylist() == [1, 2] and out.column("s").to_pylist() == ["true", "false"]
    floats = pa.table({"n": pa.array([3.0])})
    assert conform(floats, TARGET, source_file="f", ingested_at=pa.scalar(0), file_uri="k")["n"].to_pylist() == [3]


def test_a_compressed_file_expanding_past_the_limit_is_not_read_whole() -> None:
    bomb = gzip.compress(b"x" * (1 << 20))
    assert expanded(bomb, "k.jsonl.gz", "jsonl", 1 << 19) is None
    assert expanded(bomb, "k.jsonl.gz", "jsonl", 1 << 21) == b"x" * (1 << 20)
