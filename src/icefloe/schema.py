"""Schemas: inferred Arrow schemas, and conforming batches to the table.

Pure functions over pyarrow objects, no I/O, and no pyiceberg import: the parser children
(:mod:`icefloe.isolation`) import this, and each pays for what it imports. The ``--schema`` file
lives in :mod:`icefloe.schema_documents`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from icefloe.errors import PermanentFileError
from icefloe.evolution import RESCUED_COLUMN

if TYPE_CHECKING:
    from pyiceberg.table import Table

SOURCE_FILE_COLUMN = "_source_file"
INGESTED_AT_COLUMN = "_ingested_at"
METADATA_FIELDS = (
    pa.field(SOURCE_FILE_COLUMN, pa.string()),
    pa.field(INGESTED_AT_COLUMN, pa.timestamp("us", tz="UTC")),
)


def merged_schema(declared: pa.Schema, data: pa.Schema) -> pa.Schema:
    """A new table's columns under schema hints: the declared ones (their types), then the data's
    other columns, in the data's order."""
    return pa.schema([*declared, *(f for f in data if f.name not in declared.names)])


def check_schema(schema: pa.Schema, uri: str, max_nesting: int) -> None:
    """Refuse a file whose columns no Iceberg table can hold (it is FAILED; the table never sees it).

    Empty names (Avro rejects them in every later write), names given twice once nested names are
    spelled out (``a.b`` next to ``a`` → ``b``: pyiceberg's "Invalid schema"), the columns icefloe
    adds itself, and nesting deeper than ``max_nesting`` (pyiceberg cannot load a table's metadata
    back past ~64 levels, and recurses on deep types). Iterative: a 10,000-deep type is just data.
    """
    seen: set[str] = set()
    stack: list[tuple[str, pa.DataType, int]] = []
    for f in schema:
        if not f.name:
            raise PermanentFileError(f"{uri}: a column has an empty name", error_type="InvalidSchema")
        if f.name in (SOURCE_FILE_COLUMN, INGESTED_AT_COLUMN):
            raise PermanentFileError(
                f"{uri}: column {f.name!r} is a name icefloe adds to every row; rename it in the data",
                error_type="InvalidSchema",
            )
        stack.append((f.name, f.type, 1))
    while stack:
        name, t, depth = stack.pop()
        if name in seen:
            raise PermanentFileError(f"{uri}: column name {name!r} appears twice", error_type="InvalidSchema")
        seen.add(name)
        children: list[tuple[str, pa.DataType]] = []
        if pa.types.is_struct(t):
            children = [(c.name, c.type) for c in t]
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            children = [("element", t.value_type)]
        elif pa.types.is_map(t):
            children = [("key", t.key_type), ("value", t.item_type)]
        if children and depth > max_nesting:
            raise PermanentFileError(
                f"{uri}: column {name.split('.', 1)[0]!r} is nested more than {max_nesting} levels deep "
                "(ICEFLOE_MAX_NESTING)",
                error_type="InvalidSchema",
            )
        if pa.types.is_struct(t) and any(not c for c, _ in children):
            raise PermanentFileError(f"{uri}: a column has an empty name (in {name!r})", error_type="InvalidSchema")
        stack.extend((f"{name}.{c}", ct, depth + 1) for c, ct in children)


def normalise_type(t: pa.DataType) -> pa.DataType:
    """Map Arrow types that Iceberg cannot store to ones it can."""
    if pa.types.is_null(t):
        return pa.string()  # a column empty in the first file: string is the safe guess
    if pa.types.is_dictionary(t):
        return normalise_type(t.value_type)
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
        return pa.struct([pa.field(f.name, normalise_type(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(normalise_type(t.value_type))
    if pa.types.is_map(t):
        return pa.map_(normalise_type(t.key_type), normalise_type(t.item_type))
    return t


def table_arrow_schema(data_schema: pa.Schema, *, rescued: bool = False) -> pa.Schema:
    """The schema of a new table: the data's columns (normalised) plus the metadata columns, and
    ``_rescued_data`` with ``--schema-evolution rescue``."""
    fields = [
        pa.field(f.name, normalise_type(f.type), nullable=True)
        for f in data_schema
        if f.name not in (SOURCE_FILE_COLUMN, INGESTED_AT_COLUMN, RESCUED_COLUMN)
    ]
    extra = [pa.field(RESCUED_COLUMN, pa.string())] if rescued else []
    return pa.schema([*fields, *extra, *METADATA_FIELDS])


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


class ValueChangedError(PermanentFileError):
    """A cast would store something other than what the file says (``"2024-01-01"`` read as a
    timestamp going into a string column): a text file can be read again with those columns as text."""

    error_type = "SchemaMismatch"

    def __init__(self, message: str, *, column: str, retry_as_text: bool) -> None:
        super().__init__(message)
        self.column = column
        self.retry_as_text = retry_as_text


_EXACT_FLOAT_INT = 2**53  # beyond this a float may be a rounded integer (-9223372036854775809 → int64 min)


def _temporal(t: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_duration(t))


def _changes_value(source: pa.DataType, target: pa.DataType) -> str | None:
    """Why casting ``source`` to ``target`` would not store the value as written, or None.

    Readers infer types from text: a JSON string that looks like a date is read as a timestamp,
    ``true`` as a boolean. Casting those to a long (1704067200, 1) or back to a string
    ("2024-01-01 00:00:00") silently changes the value.
    """
    if pa.types.is_struct(source) and pa.types.is_struct(target):
        for f in source:
            idx = target.get_field_index(f.name)
            if idx != -1 and (why := _changes_value(f.type, target.field(idx).type)):
                return why
        return None
    if pa.types.is_list(source) or pa.types.is_large_list(source):
        if pa.types.is_list(target) or pa.types.is_large_list(target):
            return _changes_value(source.value_type, target.value_type)
        return None
    if pa.types.is_boolean(source) and not (pa.types.is_boolean(target) or pa.types.is_string(target)):
        return f"a boolean cannot be stored as {target}"
    if _temporal(source) and not _temporal(target):
        return f"a value read as {source} cannot be stored as {target} without changing it"
    return None


def _first_inexact_float(column: pa.ChunkedArray) -> int | None:
    """Row of the first float too large to be an exact integer, or None."""
    big = pc.greater(pc.abs(column), _EXACT_FLOAT_INT)
    index = pc.index(big, True).as_py()
    return None if index < 0 else int(index)


def conform(
    batch: pa.RecordBatch | pa.Table,
    target: pa.Schema,
    *,
    source_file: str,
    ingested_at: pa.Scalar,
    file_uri: str,
    rescue: bool = False,
) -> pa.Table:
    """Cast ``batch`` to the table's Arrow schema and add the metadata columns.

    Missing columns become nulls, columns the table lacks are dropped (the caller evolves the
    schema first when the ingestion infers it). A value that does not fit raises
    :class:`PermanentFileError` naming the column — unless ``rescue`` (``--schema-evolution
    rescue``): then values of columns the table lacks and values that do not fit go, per row, into
    ``_rescued_data`` as a JSON object ``{column: value as read}`` (NULL where nothing was rescued).
    """
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    n = table.num_rows
    rescued: list[dict[str, Any]] | None = None
    if rescue:
        rescued = [{} for _ in range(n)]
        for name in table.column_names:
            if target.get_field_index(name) == -1:
                _rescue_values(rescued, name, table.column(name).to_pylist())
    arrays = []
    for field in target:
        if field.name == SOURCE_FILE_COLUMN:
            arrays.append(pa.repeat(pa.scalar(source_file, field.type), n))
            continue
        if field.name == INGESTED_AT_COLUMN:
            arrays.append(pa.repeat(ingested_at.cast(field.type), n))
            continue
        if rescued is not None and field.name == RESCUED_COLUMN:
            arrays.append(pa.nulls(n, field.type))  # filled in below, once every column is through
            continue
        idx = table.schema.get_field_index(field.name)
        if idx == -1:
            arrays.append(pa.nulls(n, field.type))
            continue
        column = table.column(idx)
        if column.type == field.type:
            arrays.append(column)
            continue
        why = _changes_value(column.type, field.type)
        if why is None and pa.types.is_floating(column.type) and pa.types.is_integer(field.type):
            row = _first_inexact_float(column)
            if row is not None:
                why = f"row {row + 1} holds {column[row].as_py()!r}, too large to be an exact integer"
        retry_as_text = pa.types.is_string(field.type)
        if why is not None and rescued is not None and not retry_as_text:
            arrays.append(_rescue_column(rescued, field, column, cast=not _whole_column_changes(column, field)))
            continue
        if why is not None:
            raise ValueChangedError(
                f"{file_uri}: column {field.name!r} ({field.type} in the table): {why}",
                column=field.name,
                retry_as_text=retry_as_text,
            )
        try:
            arrays.append(pc.cast(column, field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            if rescued is not None:
                arrays.append(_rescue_column(rescued, field, column, cast=True))
                continue
            raise PermanentFileError(
                f"{file_uri}: column {field.name!r} of type {column.type} does not fit the table's "
                f"{field.type}: {str(exc).splitlines()[0]}",
                error_type="SchemaMismatch",
            ) from exc
        except Exception as exc:  # any failure converting one file is that file's error
            raise PermanentFileError(
                f"{file_uri}: column {field.name!r} cannot be converted to {field.type}: {exc}",
                error_type="UnreadableFile",
            ) from exc
    if rescued is not None and (i := target.get_field_index(RESCUED_COLUMN)) != -1:
        arrays[i] = pa.array([json.dumps(r, default=_json_value) if r else None for r in rescued], pa.string())
    return pa.Table.from_arrays(arrays, schema=target)


def _whole_column_changes(column: pa.ChunkedArray, field: pa.Field) -> bool:
    """Whether no value of ``column`` can be stored in ``field`` as written (a timestamp into a long)."""
    return not (pa.types.is_floating(column.type) and pa.types.is_integer(field.type))


def _rescue_values(rescued: list[dict[str, Any]], name: str, values: list[Any]) -> None:
    for row, value in enumerate(values):
        if value is not None:
            rescued[row][name] = value


def _rescue_column(rescued: list[dict[str, Any]], field: pa.Field, column: pa.ChunkedArray, *, cast: bool) -> pa.Array:
    """``column`` as ``field``'s type where a value fits as written, NULL (and rescued) where not.

    Value by value: only for the columns of a file that hold misfits, under rescue."""
    out: list[Any] = []
    for row, value in enumerate(column.to_pylist()):
        fits = None
        if value is not None and cast:
            try:
                fits = pc.cast(pa.array([value], column.type), field.type, safe=True)[0].as_py()
                if isinstance(value, float) and abs(value) > _EXACT_FLOAT_INT:
                    fits = None  # possibly a rounded integer: keep what was read
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
                fits = None
        if value is not None and fits is None:
            rescued[row][field.name] = value
        out.append(fits)
    return pa.array(out, field.type)


def _json_value(value: Any) -> Any:
    """Values JSON has no type for, as text (datetimes ISO-8601, bytes as hex)."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
