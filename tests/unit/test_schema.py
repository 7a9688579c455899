import datetime as dt

import pyarrow as pa
import pytest

from icefloe.errors import ConfigurationError, PermanentFileError
from icefloe.schema import conform, table_arrow_schema
from icefloe.schema_documents import parse_schema_document, user_arrow_schema


def test_short_schema_form() -> None:
    schema = parse_schema_document({"id": "long", "amount": "decimal(10, 2)", "ts": "timestamptz"})
    assert [f.name for f in schema.fields] == ["id", "amount", "ts"]
    assert str(schema.find_field("amount").field_type) == "decimal(10, 2)"
    arrow = user_arrow_schema({"id": "long", "ts": "timestamp"})
    assert arrow.field("id").type == pa.int64()
    assert arrow.field("ts").type == pa.timestamp("us")


def test_iceberg_schema_form() -> None:
    doc = {
        "type": "struct",
        "schema-id": 0,
        "fields": [{"id": 1, "name": "id", "required": False, "type": "long"}],
    }
    assert parse_schema_document(doc).find_field("id").field_id == 1


@pytest.mark.parametrize("doc", [{}, {"id": "nosuchtype"}, {"id": 3}, []])
def test_bad_schema_documents_say_why(doc: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_schema_document(doc)


def test_table_schema_adds_metadata_columns_and_normalises_types() -> None:
    data = pa.schema([("a", pa.null()), ("t", pa.timestamp("ns")), ("u", pa.uint8())])
    out = table_arrow_schema(data)
    assert out.names == ["a", "t", "u", "_source_file", "_ingested_at"]
    assert out.field("a").type == pa.string()
    assert out.field("t").type == pa.timestamp("us")
    assert out.field("_ingested_at").type == pa.timestamp("us", tz="UTC")


def test_conform_casts_fills_missing_and_adds_metadata() -> None:
    target = table_arrow_schema(pa.schema([("id", pa.int64()), ("name", pa.string())]))
    batch = pa.table({"id": pa.array([1, 2], pa.int32()), "ignored": ["x", "y"]})
    now = pa.scalar(dt.datetime(2025, 1, 1, tzinfo=dt.UTC), pa.timestamp("us", tz="UTC"))
    out = conform(batch, target, source_file="s3://b/k", ingested_at=now, file_uri="s3://b/k")
    assert out.schema == target
    assert out.column("id").to_pylist() == [1, 2]
    assert out.column("name").to_pylist() == [None, None]
    assert out.column("_source_file").to_pylist() == ["s3://b/k", "s3://b/k"]


def test_conform_rejects_a_value_that_does_not_fit_naming_the_column() -> None:
    target = table_arrow_schema(pa.schema([("id", pa.int64())]))
    now = pa.scalar(dt.datetime(2025, 1, 1, tzinfo=dt.UTC), pa.timestamp("us", tz="UTC"))
    with pytest.raises(PermanentFileError, match="'id'") as info:
        conform(
            pa.table({"id": ["12", "twelve"]}),
            target,
            source_file="s3://b/k",
            ingested_at=now,
            file_uri="s3://b/k",
        )
    assert info.value.error_type == "SchemaMismatch"
