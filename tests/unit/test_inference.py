"""Dates and times in CSV and JSON text: ISO-8601 with a zone is timestamptz, without timestamp;
--timestamp-format / --date-format for the rest (icefloe.inference, through formats.parse_whole)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping

import pyarrow as pa
import pytest

from icefloe.errors import PermanentFileError
from icefloe.formats import ReadOptions, parse_whole, record_batches

UTC = dt.UTC


def jsonl(*records: Mapping[str, object]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_iso_8601_with_a_zone_is_timestamptz_and_without_timestamp(fmt: str) -> None:
    rows = {
        "zulu": "2025-01-01T10:00:00Z",
        "offset": "2025-01-01T10:00:00+02:00",
        "fraction": "2025-01-01T10:00:00.250Z",
        "naive": "2025-01-01T10:00:00",
        "naive_fraction": "2025-01-01 10:00:00.5",
        "text": "not a time",
    }
    data = jsonl(rows) if fmt == "jsonl" else (",".join(rows) + "\n" + ",".join(rows.values()) + "\n").encode()
    table = parse_whole(data, f"s3://b/k.{fmt}", ReadOptions(format=fmt))
    types = {f.name: f.type for f in table.schema}
    for name in ("zulu", "offset", "fraction"):
        assert pa.types.is_timestamp(types[name]) and types[name].tz == "UTC", (name, types[name])
    for name in ("naive", "naive_fraction"):
        assert pa.types.is_timestamp(types[name]) and types[name].tz is None, (name, types[name])
    assert types["text"] == pa.string()
    (row,) = table.to_pylist()
    assert row["offset"] == dt.datetime(2025, 1, 1, 8, tzinfo=UTC)
    assert row["fraction"] == dt.datetime(2025, 1, 1, 10, 0, 0, 250_000, tzinfo=UTC)
    assert row["naive_fraction"] == dt.datetime(2025, 1, 1, 10, 0, 0, 500_000)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_timestamp_and_date_formats(fmt: str) -> None:
    rows = {"at": "02/01/2025 13:45", "on": "02/01/2025", "zoned": "2025-01-02 13:45 +0100"}
    data = jsonl(rows) if fmt == "jsonl" else (",".join(rows) + "\n" + ",".join(rows.values()) + "\n").encode()
    options = ReadOptions(
        format=fmt, timestamp_formats=("%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M %z"), date_formats=("%d/%m/%Y",)
    )
    (row,) = parse_whole(data, f"s3://b/k.{fmt}", options).to_pylist()
    assert row["at"].replace(tzinfo=None) == dt.datetime(2025, 1, 2, 13, 45)
    assert row["on"] in (dt.date(2025, 1, 2), dt.datetime(2025, 1, 2))
    assert row["zoned"] == dt.datetime(2025, 1, 2, 12, 45, tzinfo=UTC)
    if fmt == "jsonl":
        assert row["on"] == dt.date(2025, 1, 2)
    # Without the formats they stay text, as written.
    (plain,) = parse_whole(data, f"s3://b/k.{fmt}", ReadOptions(format=fmt)).to_pylist()
    assert plain == rows


def test_a_column_that_does_not_all_convert_stays_text() -> None:
    table = parse_whole(jsonl({"t": "2025-01-01T10:00:00.1Z"}, {"t": "soon"}), "s3://b/k.jsonl", ReadOptions("jsonl"))
    assert table.schema.field("t").type == pa.string()


def test_a_later_block_that_does_not_convert_fails_naming_the_column() -> None:
    first = jsonl(*({"id": i, "t": "2025-01-01T10:00:00.5Z"} for i in range(2000)))
    data = first + jsonl({"id": 9, "t": "later"})
    options = ReadOptions("jsonl", block_size=len(first) // 2)
    with pytest.raises(PermanentFileError, match="column 't'") as failed:
        list(record_batches(_Stream(data), "s3://b/k.jsonl", options))
    assert failed.value.error_type == "SchemaMismatch"


class _Stream:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, size: int = -1) -> bytes:
        size = len(self.data) if size is None or size < 0 else size
        chunk = self.data[self.at : self.at + size]
        self.at += len(chunk)
        return chunk

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False
