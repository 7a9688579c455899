import bz2
import gzip
from collections.abc import Callable

import pyarrow as pa
import pytest

from icefloe.errors import PermanentFileError
from icefloe.formats import ReadOptions, compression_of, record_batches


def read(data: bytes, path: str, **options: object) -> pa.Table:
    opts = ReadOptions(**options)  # type: ignore[arg-type]
    batches = list(record_batches(pa.BufferReader(data), path, opts))
    return pa.Table.from_batches(batches) if batches else pa.table({})


def test_compression_by_extension() -> None:
    assert compression_of("a.csv.gz") == "gzip"
    assert compression_of("a.JSONL.ZST") == "zstd"
    assert compression_of("a.csv.bz2") == "bz2"
    assert compression_of("a.csv") is None


@pytest.mark.parametrize("codec", ["gz", "bz2", "zst"])
def test_compressed_jsonl(codec: str) -> None:
    raw = b'{"id": 1}\n{"id": 2}\n'
    data: dict[str, Callable[[bytes], bytes]] = {"gz": gzip.compress, "bz2": bz2.compress}
    if codec == "zst":
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as out:
            out.write(raw)
        payload = sink.getvalue().to_pybytes()
    else:
        payload = data[codec](raw)
    table = read(payload, f"x.jsonl.{codec}", format="jsonl")
    assert table.column("id").to_pylist() == [1, 2]


def test_csv_options() -> None:
    table = read(b"a;b\n1;'x;y'\n", "x.csv", format="csv", csv_delimiter=";", csv_quote_char="'")
    assert table.to_pylist() == [{"a": 1, "b": "x;y"}]
    headless = read(b"1,2\n3,4\n", "x.csv", format="csv", csv_header=False)
    assert headless.num_rows == 2


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_empty_text_file_is_zero_records_not_an_error(fmt: str) -> None:
    assert read(b"", f"x.{fmt}", format=fmt).num_rows == 0
    assert read(gzip.compress(b""), f"x.{fmt}.gz", format=fmt).num_rows == 0


@pytest.mark.parametrize(
    ("data", "path", "fmt", "error_type"),
    [
        (b'{"id": 1\n', "x.jsonl", "jsonl", "MalformedJSON"),
        (b"a,b\n1,2\n3,4,5\n", "x.csv", "csv", "MalformedCSV"),
        (b"not gzip", "x.csv.gz", "csv", "CorruptFile"),
        (b"PAR1 truncated", "x.parquet", "parquet", "CorruptFile"),
        (b"", "x.parquet", "parquet", "CorruptFile"),
        (b"name\n\xff\xfe\n", "x.csv", "csv", "EncodingError"),
        (b'{"name": "\xff\xfe"}\n', "x.jsonl", "jsonl", "EncodingError"),
    ],
)
def test_bad_content_is_a_permanent_error_with_a_type(data: bytes, path: str, fmt: str, error_type: str) -> None:
    with pytest.raises(PermanentFileError) as info:
        read(data, path, format=fmt)
    assert info.value.error_type == error_type
    assert path in str(info.value) and "\n" not in str(info.value)
