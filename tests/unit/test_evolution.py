"""The pure decisions of schema evolution: which type changes are safe widenings, what differs."""

from __future__ import annotations

import pyarrow as pa
import pytest

from icefloe.evolution import SchemaDiff, added_columns, describe_change, diff, mismatch_message, widened_type


@pytest.mark.parametrize(
    ("table", "data", "expected"),
    [
        (pa.int32(), pa.int64(), pa.int64()),
        (pa.float32(), pa.float64(), pa.float64()),
        (pa.decimal128(10, 2), pa.decimal128(12, 2), pa.decimal128(12, 2)),
        (pa.int64(), pa.int64(), None),  # same type: nothing to do
        (pa.int64(), pa.int32(), None),  # the table holds it already
        (pa.float64(), pa.float32(), None),
        (pa.int64(), pa.float64(), None),  # long → double is no Iceberg promotion
        (pa.int32(), pa.float64(), None),
        (pa.decimal128(10, 2), pa.decimal128(12, 3), None),  # another scale changes every value
        (pa.decimal128(12, 2), pa.decimal128(10, 2), None),  # narrowing
        (pa.int64(), pa.string(), None),  # not a widening: the bad-record policy's business
        (pa.string(), pa.int64(), None),
    ],
)
def test_widenings_are_the_safe_iceberg_promotions_only(
    table: pa.DataType, data: pa.DataType, expected: object
) -> None:
    assert widened_type(table, data) == expected


def test_diff_names_new_and_widened_columns_and_ignores_missing_ones() -> None:
    table = pa.schema([("a", pa.int32()), ("b", pa.string()), ("gone", pa.float64())])
    data = pa.schema([("a", pa.int64()), ("b", pa.string()), ("c", pa.float64())])
    change = diff(table, data)
    assert [f.name for f in change.added] == ["c"]
    assert change.widened == (("a", pa.int32(), pa.int64()),)
    assert change.describe() == "adds c (double); widens a int → long"
    assert change.columns() == ["c", "a"]


def test_same_change_same_fingerprint_whatever_the_column_order() -> None:
    one = diff(pa.schema([("a", pa.int64())]), pa.schema([("x", pa.string()), ("y", pa.int64())]))
    two = diff(pa.schema([("a", pa.int64())]), pa.schema([("y", pa.int64()), ("a", pa.int64()), ("x", pa.string())]))
    other = diff(pa.schema([("a", pa.int64())]), pa.schema([("x", pa.int64()), ("y", pa.int64())]))
    assert one.fingerprint == two.fingerprint
    assert one.fingerprint != other.fingerprint


def test_a_stored_change_gives_back_the_arrow_types_of_its_columns() -> None:
    nested = pa.struct([("k", pa.string()), ("v", pa.list_(pa.int64()))])
    change = diff(pa.schema([("a", pa.int64())]), pa.schema([("n", nested)]))
    stored = change.as_json()
    assert added_columns(stored) == pa.schema([("n", nested)])
    assert describe_change(stored) == "adds n (struct<k: string, v: list<long>>)"
    assert added_columns(SchemaDiff().as_json()) is None
    assert not SchemaDiff()


def test_fail_names_the_column() -> None:
    change = diff(pa.schema([("a", pa.int32())]), pa.schema([("a", pa.int64())]))
    assert mismatch_message("s3://b/k.parquet", change) == (
        "s3://b/k.parquet: column 'a' is long in the file, int in the table (--schema-evolution fail)"
    )


@pytest.mark.parametrize("policy", ["approve", "rescue", "fail"])
def test_the_spark_engine_refuses_the_policies_it_cannot_honour_at_create_time(policy: str) -> None:
    from icefloe.errors import ConfigurationError
    from icefloe.ingestions import IngestionSpec

    spec = IngestionSpec(
        name="s", source="s3://b/p/", format="jsonl", table="ns.t", engine="spark", schema_evolution=policy
    )
    with pytest.raises(ConfigurationError, match=f"--schema-evolution {policy} is not supported by the spark engine"):
        spec.validate()
    IngestionSpec(name="s", source="s3://b/p/", format="jsonl", table="ns.t", engine="spark").validate()


def test_rescue_puts_unknown_and_unfitting_values_of_a_row_into_one_json_object() -> None:
    import datetime as dt
    import json

    from icefloe.schema import conform, table_arrow_schema

    target = table_arrow_schema(pa.schema([("id", pa.int64()), ("flag", pa.bool_())]), rescued=True)
    data = pa.table(
        {
            "id": pa.array(["1", "two", None]),
            "flag": pa.array([True, None, False]),
            "when": pa.array([dt.datetime(2025, 1, 2), None, None], pa.timestamp("us")),
        }
    )
    at = pa.scalar(dt.datetime(2025, 1, 1, tzinfo=dt.UTC), pa.timestamp("us", tz="UTC"))
    out = conform(data, target, source_file="s3://b/k", ingested_at=at, file_uri="s3://b/k", rescue=True)
    assert out.column("id").to_pylist() == [1, None, None]
    assert out.column("flag").to_pylist() == [True, None, False]
    rescued = [json.loads(v) if v else None for v in out.column("_rescued_data").to_pylist()]
    assert rescued == [{"when": "2025-01-02T00:00:00"}, {"id": "two"}, None]


@pytest.mark.parametrize(
    "doc",
    [
        {"id": "long", "amount": "decimal(12)"},
        {"type": "struct", "fields": [{"id": 1, "name": "amount", "type": "decimal(12)", "required": False}]},
    ],
    ids=["short-form", "iceberg-form"],
)
def test_a_bad_type_in_a_schema_file_names_the_column_and_the_type(doc: dict[str, object]) -> None:
    from icefloe.errors import ConfigurationError
    from icefloe.schema_documents import parse_schema_document

    with pytest.raises(ConfigurationError) as bad:
        parse_schema_document(doc)
    assert str(bad.value).startswith("schema column 'amount': 'decimal(12)' is not an Iceberg type (types: boolean")
