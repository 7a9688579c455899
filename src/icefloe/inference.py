"""Dates and times in text files: which text columns are timestamps, with or without a time zone.

pyarrow's JSON reader turns ISO-8601 strings into naive timestamps whatever their zone (a ``Z`` is
dropped after converting to UTC) and leaves fractional seconds as text; its CSV reader knows only
ISO-8601 and the formats it is given. This settles it the same way for CSV and JSON:

- text that is ISO-8601 with ``Z`` or an offset is a ``timestamptz``, without one a ``timestamp``;
- text matching one of ``--timestamp-format`` (strptime-style) is a timestamp (``timestamptz``
  when the format has ``%z``), one of ``--date-format`` a date.

A column is decided on the first batch of a file from its first value, and converted only if every
value of the batch converts; later batches of a streamed file must convert the same way. Columns
declared in ``--schema`` and columns read as text on purpose are left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from icefloe.errors import PermanentFileError

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(?P<zone>[Zz]|[+-]\d{2}(:?\d{2})?)?$")


@dataclass(frozen=True)
class _Plan:
    kind: str  # "cast" (to ``target``) | "strptime" (``format``, then to ``target``)
    target: pa.DataType
    format: str = ""


def _first(column: pa.Array | pa.ChunkedArray) -> object:
    values = pc.drop_null(column)
    return values[0].as_py() if len(values) else None


def _convert(column: pa.Array | pa.ChunkedArray, plan: _Plan) -> pa.Array | pa.ChunkedArray:
    if plan.kind == "strptime":
        parsed = pc.strptime(column, format=plan.format, unit="us", error_is_null=False)
        return parsed if parsed.type == plan.target else pc.cast(parsed, plan.target)
    return pc.cast(column, plan.target)


def _raw_has_zone(head: bytes, name: str) -> bool:
    """Whether the first JSON string value of key ``name`` in ``head`` carries a zone."""
    found = re.search(rb'"' + re.escape(name.encode()) + rb'"\s*:\s*"([^"\\]{10,64})"', head)
    if found is None:
        return False
    match = _ISO.match(found.group(1).decode("utf-8", "replace"))
    return bool(match and match.group("zone"))


class TemporalColumns:
    """The temporal decisions for one file's batches (see the module's docstring)."""

    def __init__(
        self,
        *,
        fmt: str,
        skip: frozenset[str],
        timestamp_formats: tuple[str, ...] = (),
        date_formats: tuple[str, ...] = (),
    ) -> None:
        self.fmt = fmt
        self.skip = skip
        self.timestamp_formats = timestamp_formats
        self.date_formats = date_formats
        self._plans: dict[str, _Plan] | None = None

    def _decide(self, batch: pa.RecordBatch, head: bytes) -> dict[str, _Plan]:
        plans: dict[str, _Plan] = {}
        for i, field in enumerate(batch.schema):
            if field.name in self.skip:
                continue
            column = batch.column(i)
            if pa.types.is_timestamp(field.type) and field.type.tz is None and self.fmt != "csv":
                # pyarrow's JSON reader converted the instant to UTC and dropped the zone.
                if _raw_has_zone(head, field.name):
                    plans[field.name] = _Plan("cast", pa.timestamp(field.type.unit, tz="UTC"))
                continue
            if not pa.types.is_string(field.type):
                continue
            first = _first(column)
            if not isinstance(first, str):
                continue
            for plan in self._candidates(first):
                try:
                    _convert(column, plan)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
                plans[field.name] = plan
                break
        return plans

    def _candidates(self, first: str) -> list[_Plan]:
        candidates = []
        match = _ISO.match(first.strip())
        if match:
            candidates.append(_Plan("cast", pa.timestamp("us", tz="UTC" if match.group("zone") else None)))
        for f in self.timestamp_formats:
            candidates.append(_Plan("strptime", pa.timestamp("us", tz="UTC" if "%z" in f else None), f))
        candidates.extend(_Plan("strptime", pa.date32(), f) for f in self.date_formats)
        return candidates

    def apply(self, batch: pa.RecordBatch, head: bytes, uri: str) -> pa.RecordBatch:
        """``batch`` with its temporal text columns converted."""
        if self._plans is None:
            self._plans = self._decide(batch, head)
        if not self._plans:
            return batch
        columns, fields = [], []
        for i, field in enumerate(batch.schema):
            plan = self._plans.get(field.name)
            column = batch.column(i)
            if plan is not None:
                try:
                    column = _convert(column, plan)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise PermanentFileError(
                        f"{uri}: column {field.name!r}: {' '.join(str(exc).split())[:300]} (its first rows were "
                        f"read as {plan.target}; declare its type with --schema)",
                        error_type="SchemaMismatch",
                    ) from exc
                field = pa.field(field.name, plan.target)
            columns.append(column)
            fields.append(field)
        return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))
