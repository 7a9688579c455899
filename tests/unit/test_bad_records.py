"""Bad records found by salvaging a file record by record (pure: pyarrow only)."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from icefloe.badrecords import Limit, check_policy, parse_salvaged
from icefloe.errors import ConfigurationError, PermanentFileError
from icefloe.formats import ReadOptions, parse_whole
from icefloe.ingestions import IngestionSpec


def salvage(text: bytes, options: ReadOptions) -> tuple[pa.Table, list[tuple[int, str]]]:
    table, bad = parse_salvaged(text, "s3://b/f", options, parse_whole)
    return table, [(b.row_number, b.raw) for b in bad]


def test_broken_json_lines_are_set_aside_with_their_line_and_text() -> None:
    text = b'{"id": 1}\n{"id": 2\n\n{"id": 3}\nnot json\n{"id": 4}\nnull\n'
    table, bad = salvage(text, ReadOptions(format="jsonl", salvage=True))
    assert table.column("id").to_pylist() == [1, 3, 4]
    assert bad == [(2, '{"id": 2'), (5, "not json"), (7, "null")]


def test_csv_rows_of_the_wrong_arity_keep_their_exact_text_quoted_newlines_included() -> None:
    text = b'id,name\n1,"a\nb"\n2\n3,c,extra\n4,d\n'
    table, bad = salvage(text, ReadOptions(format="csv", salvage=True))
    assert table.column("id").to_pylist() == [1, 4]
    assert table.column("name").to_pylist() == ["a\nb", "d"]
    assert bad == [(4, "2"), (5, "3,c,extra")]


def test_a_value_the_declared_type_cannot_hold_is_one_bad_record() -> None:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    text = b"id,name\n1,a\nx,b\n3,c\n"
    table, bad = salvage(text, ReadOptions(format="csv", schema=schema, salvage=True))
    assert table.column("id").to_pylist() == [1, 3]
    assert bad == [(3, "x,b")]


def test_a_value_the_table_cannot_hold_is_a_bad_record_and_the_rest_keep_their_type() -> None:
    target = pa.schema([("id", pa.int64())])
    text = b'{"id": 1}\n{"id": "two"}\n{"id": 3}\n'
    table, bad = salvage(text, ReadOptions(format="jsonl", salvage=True, target=target))
    assert table.column("id").to_pylist() == [1, 3]
    assert [n for n, _ in bad] == [2]


def test_limits_parse_and_decide() -> None:
    assert Limit.parse("10") == Limit(10, False) and Limit.parse(" 5% ") == Limit(5, True)
    assert Limit.parse(None) is None
    assert Limit(2, False).exceeded(3, 100) and not Limit(2, False).exceeded(2, 100)
    assert Limit(10, True).exceeded(2, 10) and not Limit(10, True).exceeded(1, 10)
    for wrong in ("ten", "-1", "150%"):
        with pytest.raises(ConfigurationError):
            Limit.parse(wrong)
    with pytest.raises(ConfigurationError, match="needs --on-bad-record"):
        check_policy("fail-file", "3")


def test_the_spark_engine_refuses_skip_and_quarantine_at_create_time() -> None:
    spec = IngestionSpec(name="s", source="s3://b/p/", format="jsonl", table="a.b", engine="spark")
    spec.validate()  # fail-file: what Spark does
    for policy in ("skip", "quarantine"):
        with pytest.raises(ConfigurationError, match=f"spark engine does not support --on-bad-record {policy}"):
            dataclasses.replace(spec, on_bad_record=policy).validate()
    with pytest.raises(ConfigurationError, match="choose one of fail-file, skip, quarantine"):
        dataclasses.replace(spec, engine="arrow", on_bad_record="drop").validate()


def test_a_column_none_of_whose_values_fit_fails_the_file_not_its_records() -> None:
    target = pa.schema([("id", pa.int64())])
    with pytest.raises(PermanentFileError, match="none of its 2 values converts to int64"):
        salvage(b'{"id": "x"}\n{"id": "y"}\n', ReadOptions(format="jsonl", salvage=True, target=target))


def test_an_element_of_a_json_document_is_a_record_too() -> None:
    schema = pa.schema([("id", pa.int64())])
    table, bad = salvage(
        b'[{"id": 1}, {"id": "x"},\n {"id": 3}]', ReadOptions(format="json", schema=schema, salvage=True)
    )
    assert table.column("id").to_pylist() == [1, 3]
    assert bad == [(2, '{"id": "x"}')]
