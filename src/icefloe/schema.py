"""Schemas: the ``--schema`` file, inferred Arrow schemas, and conforming batches to the table.

Pure functions over pyarrow/pyiceberg objects; no I/O.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.schema import Schema
from pyiceberg.types import IcebergType, NestedField

from icefloe.errors import ConfigurationError, PermanentFileError

if TYPE_CHECKING:
    from pyiceberg.table import Table

SOURCE_FILE_COLUMN = "_source_file"
INGESTED_AT_COLUMN = "_ingested_at"
METADATA_FIELDS = (
    pa.field(SOURCE_FILE_COLUMN, pa.string()),
    pa.field(INGESTED_AT_COLUMN, pa.timestamp("us", tz="UTC")),
)


def parse_schema_document(doc: Any) -> Schema:
    """An Iceberg schema from either Iceberg's JSON form or the short ``{"col": "type"}`` form."""
    if not isinstance(doc, dict) or not doc:
        raise ConfigurationError("a schema file must hold a JSON object")
    try:
        if doc.get("type") == "struct" and "fields" in doc:
            return Schema.model_validate(doc)
        fields = []
        for field_id, (name, type_name) in enumerate(doc.items(), start=1):
            if not isinstance(type_name, str):
                raise ConfigurationError(f"schema column {name!r}: type must be a string, got {type_name!r}")
            fields.append(NestedField(field_id, name, IcebergType.model_validate(type_name), required=False))
        return Schema(*fields)
    except ConfigurationError:
        raise
    except Exception as exc:  # pydantic's ValidationError is long; keep its first line
        first = str(exc).strip().splitlines()
        raise ConfigurationError(f"invalid schema: {first[-1] if first else exc}") from exc


def canonical_schema_document(doc: dict[str, Any]) -> dict[str, Any]:
    """The schema in Iceberg's JSON form, as stored with an ingestion.

    The short form is a JSON object whose key order is the column order; PostgreSQL's JSONB does
    not keep key order, so it is stored as Iceberg's form (an ordered list of fields) instead.
    """
    canonical: dict[str, Any] = json.loads(parse_schema_document(doc).model_dump_json(by_alias=True))
    return canonical


def load_schema_file(path: str) -> dict[str, Any]:
    """Read and validate a ``--schema`` file; returns the JSON document stored with the ingestion."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise ConfigurationError(f"cannot read schema file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"schema file {path} is not valid JSON: {exc}") from exc
    parse_schema_document(doc)
    if not isinstance(doc, dict):
        raise ConfigurationError("a schema file must hold a JSON object")
    return doc


def user_arrow_schema(doc: dict[str, Any]) -> pa.Schema:
    """The Arrow schema files are parsed with when the ingestion has a schema."""
    from pyiceberg.io.pyarrow import schema_to_pyarrow  # heavy import: only when reading

    schema: pa.Schema = schema_to_pyarrow(parse_schema_document(doc), include_field_ids=False)
    return schema


def _normalise_type(t: pa.DataType) -> pa.DataType:
    """Map Arrow types that Iceberg cannot store to ones it can."""
    if pa.types.is_null(t):
        return pa.string()  # a column empty in the first file: string is the safe guess
    if pa.types.is_dictionary(t):
        return _normalise_type(t.value_type)
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_time(t):
        return pa.time64("us")
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_unsigned_integer(t) or t in (pa.int8(), pa.int16()):
        return pa.int64() if t in (pa.uint32(), pa.uint64()) else pa.int32()
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _normalise_type(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_normalise_type(t.value_type))
    if pa.types.is_map(t):
        return pa.map_(_normalise_type(t.key_type), _normalise_type(t.item_type))
    return t


def table_arrow_schema(data_schema: pa.Schema) -> pa.Schema:
    """The schema of a new table: the data's columns (normalised) plus the metadata columns."""
    fields = [
        pa.field(f.name, _normalise_type(f.type), nullable=True)
        for f in data_schema
        if f.name not in (SOURCE_FILE_COLUMN, INGESTED_AT_COLUMN)
    ]
    return pa.schema([*fields, *METADATA_FIELDS])


def _plain_strings(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _plain_strings(f.type), f.nullable, f.metadata) for f in t])
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(
            pa.field(
                t.value_field.name,
                _plain_strings(t.value_type),
                t.value_field.nullable,
                t.value_field.metadata,
            )
        )
    return t


def arrow_target(table: Table) -> pa.Schema:
    """The Arrow schema rows are conformed to before writing to ``table``.

    pyiceberg maps Iceberg strings to Arrow large_string; readers produce string. Conforming to
    plain string avoids a copy of every string column (the writer accepts both).
    """
    schema = table.schema().as_arrow()
    return pa.schema([pa.field(f.name, _plain_strings(f.type), f.nullable, f.metadata) for f in schema])


def new_columns(table_schema: pa.Schema, data_schema: pa.Schema) -> pa.Schema | None:
    """Columns of ``data_schema`` the table lacks (normalised), or None when there are none."""
    known = set(table_schema.names)
    extra = [pa.field(f.name, _normalise_type(f.type)) for f in data_schema if f.name not in known]
    return pa.schema(extra) if extra else None


def conform(
    batch: pa.RecordBatch | pa.Table,
    target: pa.Schema,
    *,
    source_file: str,
    ingested_at: pa.Scalar,
    file_uri: str,
) -> pa.Table:
    """Cast ``batch`` to the table's Arrow schema and add the metadata columns.

    Missing columns become nulls, columns the table lacks are dropped (the caller evolves the
    schema first when the ingestion infers it). A value that does not fit raises
    :class:`PermanentFileError` naming the column.
    """
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    n = table.num_rows
    arrays = []
    for field in target:
        if field.name == SOURCE_FILE_COLUMN:
            arrays.append(pa.repeat(pa.scalar(source_file, field.type), n))
            continue
        if field.name == INGESTED_AT_COLUMN:
            arrays.append(pa.repeat(ingested_at.cast(field.type), n))
            continue
        idx = table.schema.get_field_index(field.name)
        if idx == -1:
            arrays.append(pa.nulls(n, field.type))
            continue
        column = table.column(idx)
        if column.type == field.type:
            arrays.append(column)
            continue
        try:
            arrays.append(pc.cast(column, field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise PermanentFileError(
                f"{file_uri}: column {field.name!r} of type {column.type} does not fit the table's "
                f"{field.type}: {str(exc).splitlines()[0]}",
                error_type="SchemaMismatch",
            ) from exc
    return pa.Table.from_arrays(arrays, schema=target)
