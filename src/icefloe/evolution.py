"""Schema evolution's pure decisions: how a file's columns differ from the table's, which type
changes are safe widenings, and what each ``--schema-evolution`` policy does with a difference.

No I/O: :mod:`icefloe.schema_changes` keeps the ledger's record of changes, the engines apply them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from pyiceberg.table import Table

RESCUED_COLUMN = "_rescued_data"
POLICIES = ("add-columns", "approve", "rescue", "fail")


def widened_type(table_type: pa.DataType, data_type: pa.DataType) -> pa.DataType | None:
    """The type a column of ``table_type`` must become to hold ``data_type`` values as written, when
    that is one of Iceberg's safe promotions; None when no promotion is needed or none is safe.

    int → long, float → double, decimal(P,S) → decimal(P',S) with P' > P. pyiceberg's promotion
    check accepts decimals of another scale, which would change every stored value: the scale is
    checked here.
    """
    if table_type == data_type:
        return None
    if table_type == pa.int32() and data_type == pa.int64():
        return pa.int64()
    if table_type == pa.float32() and data_type == pa.float64():
        return pa.float64()
    if (
        pa.types.is_decimal(table_type)
        and pa.types.is_decimal(data_type)
        and data_type.scale == table_type.scale
        and table_type.precision < data_type.precision <= 38
    ):
        return pa.decimal128(data_type.precision, data_type.scale)
    return None


@dataclass(frozen=True)
class Widening:
    name: str
    from_type: str
    to_type: str


@dataclass(frozen=True)
class SchemaDiff:
    """How a file's top-level columns differ from the table's: columns the table lacks (as Arrow
    fields, normalised) and columns whose table type must widen. Columns the file lacks are no
    difference (they are NULL), nor are types the table's type holds (int into long)."""

    added: tuple[pa.Field, ...] = ()
    widened: tuple[tuple[str, pa.DataType, pa.DataType], ...] = field(default=())  # name, table type, new type

    def __bool__(self) -> bool:
        return bool(self.added or self.widened)

    def as_json(self) -> dict[str, Any]:
        """The change as the ledger stores it and the CLI/API show it (Iceberg type names)."""
        return {
            "added": [{"name": f.name, "type": iceberg_type_name(f.type)} for f in self.added],
            "widened": [
                {"name": name, "from": iceberg_type_name(old), "to": iceberg_type_name(new)}
                for name, old, new in self.widened
            ],
            # What an approval applies: the Arrow types of the added columns, in Arrow's IPC form.
            "arrow_schema": pa.schema(list(self.added)).serialize().to_pybytes().hex() if self.added else None,
        }

    @property
    def fingerprint(self) -> str:
        """Identical for two files with the same change: they share one pending change."""
        shown = self.as_json()
        shown.pop("arrow_schema")
        shown["added"] = sorted(shown["added"], key=lambda c: c["name"])
        shown["widened"] = sorted(shown["widened"], key=lambda c: c["name"])
        return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()

    def describe(self) -> str:
        return describe_change(self.as_json())

    def columns(self) -> list[str]:
        return [f.name for f in self.added] + [name for name, _, _ in self.widened]


def describe_change(change: dict[str, Any]) -> str:
    """``adds b (string), c (long); widens a int → long`` from a stored change."""
    parts = []
    if change.get("added"):
        parts.append("adds " + ", ".join(f"{c['name']} ({c['type']})" for c in change["added"]))
    if change.get("widened"):
        parts.append("widens " + ", ".join(f"{c['name']} {c['from']} → {c['to']}" for c in change["widened"]))
    return "; ".join(parts) or "no change"


def added_columns(change: dict[str, Any]) -> pa.Schema | None:
    """The Arrow schema of the columns a stored change adds (None: it adds none)."""
    hexed = change.get("arrow_schema")
    if not hexed:
        return None
    return pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(hexed)))


def diff(table_schema: pa.Schema, data_schema: pa.Schema, normalise: Any = None) -> SchemaDiff:
    """The difference ``data_schema`` (a file's, already normalised) makes to ``table_schema``.

    ``normalise``: maps a data type to the type a new column gets (default: unchanged).
    """
    known = {f.name: f for f in table_schema}
    added, widened = [], []
    for f in data_schema:
        existing = known.get(f.name)
        if existing is None:
            added.append(pa.field(f.name, normalise(f.type) if normalise else f.type))
            continue
        new = widened_type(existing.type, normalise(f.type) if normalise else f.type)
        if new is not None:
            widened.append((f.name, existing.type, new))
    return SchemaDiff(tuple(added), tuple(widened))


# ----------------------------------------------------------------------------- applying a change
# Pure over pyiceberg objects: a change staged on an ``UpdateSchema`` or a table's metadata in memory.


def evolve(update: Any, change: dict[str, Any]) -> None:
    """Stage ``change`` on a pyiceberg ``UpdateSchema``: columns already there are left alone."""
    added = added_columns(change)
    if added is not None:
        update.union_by_name(added)
    for widened in change.get("widened", []):
        update.update_column(widened["name"], field_type=_iceberg_type(widened["to"]))


def _iceberg_type(name: str) -> Any:
    """The Iceberg type of a widening's target (long, double, decimal(P,S))."""
    from pyiceberg.types import DecimalType, DoubleType, LongType

    if name == "long":
        return LongType()
    if name == "double":
        return DoubleType()
    if name.startswith("decimal("):
        precision, scale = name[len("decimal(") : -1].split(",")
        return DecimalType(int(precision), int(scale))
    raise ValueError(f"not a widening icefloe applies: {name}")


def evolved(table: Table, change: SchemaDiff) -> Table:
    """``table`` with ``change`` applied to its metadata in memory (nothing is committed): data
    files written for it carry the field ids the change will have once committed on this head."""
    from pyiceberg.table import Table as IcebergTable

    tx = table.transaction()
    with tx.update_schema() as update:
        evolve(update, change.as_json())
    return IcebergTable(table.name(), tx.table_metadata, table.metadata_location, table.io, table.catalog)


def moved_field(written: dict[str, int], head: dict[str, int]) -> str | None:
    """The first column (full name) whose field id on the table head differs from the one data files
    were written with, or None: such files cannot be committed to that head."""
    return next((name for name, field_id in written.items() if head.get(name) != field_id), None)


def iceberg_type_name(t: pa.DataType) -> str:
    """The Iceberg name of an Arrow type, as users write it in a schema file."""
    simple = {
        pa.bool_(): "boolean",
        pa.int32(): "int",
        pa.int64(): "long",
        pa.float32(): "float",
        pa.float64(): "double",
        pa.date32(): "date",
        pa.string(): "string",
        pa.large_string(): "string",
        pa.binary(): "binary",
        pa.large_binary(): "binary",
    }
    if t in simple:
        return simple[t]
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{c.name}: {iceberg_type_name(c.type)}" for c in t) + ">"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{iceberg_type_name(t.value_type)}>"
    if pa.types.is_map(t):
        return f"map<{iceberg_type_name(t.key_type)}, {iceberg_type_name(t.item_type)}>"
    return str(t)


def held_message(uri: str, change: SchemaDiff) -> str:
    """The HELD file's message: what it waits for, and how to decide."""
    return f"{uri}: schema change pending approval: {change.describe()} (icefloe schema pending NAME)"


def mismatch_message(uri: str, change: SchemaDiff) -> str:
    """Why ``--schema-evolution fail`` failed a file, naming the first column that differs."""
    if change.added:
        names = ", ".join(repr(f.name) for f in change.added)
        return f"{uri}: column(s) {names} not in the table (--schema-evolution fail)"
    name, old, new = change.widened[0]
    return (
        f"{uri}: column {name!r} is {iceberg_type_name(new)} in the file, {iceberg_type_name(old)} in the table "
        "(--schema-evolution fail)"
    )
