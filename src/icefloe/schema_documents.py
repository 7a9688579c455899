"""The ``--schema`` file: Iceberg's JSON schema form or the short ``{"col": "type"}`` form,
validated with pyiceberg's own models, and the Arrow schema files are then parsed with.

Kept apart from :mod:`icefloe.schema` so the parser children never import pyiceberg.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from pyiceberg.schema import Schema
from pyiceberg.types import IcebergType, NestedField

from icefloe.errors import ConfigurationError


def parse_schema_document(doc: Any) -> Schema:
    """An Iceberg schema from either Iceberg's JSON form or the short ``{"col": "type"}`` form."""
    if not isinstance(doc, dict) or not doc:
        raise ConfigurationError("a schema file must hold a JSON object")
    try:
        if doc.get("type") == "struct" and "fields" in doc:
            for field in doc["fields"] if isinstance(doc["fields"], list) else []:
                if isinstance(field, dict) and "name" in field:
                    _column_type(field["name"], field.get("type"))
            return Schema.model_validate(doc)
        fields = []
        for field_id, (name, type_name) in enumerate(doc.items(), start=1):
            if not isinstance(type_name, str):
                raise ConfigurationError(f"schema column {name!r}: type must be a string, got {type_name!r}")
            fields.append(NestedField(field_id, name, _column_type(name, type_name), required=False))
        return Schema(*fields)
    except ConfigurationError:
        raise
    except Exception as exc:  # pydantic's ValidationError is long; keep its first line
        first = str(exc).strip().splitlines()
        raise ConfigurationError(f"invalid schema: {first[-1] if first else exc}") from exc


_TYPE_NAMES = (
    "boolean, int, long, float, double, decimal(P,S), date, time, timestamp, timestamptz, string, uuid, "
    "fixed[N], binary"
)


def _column_type(name: object, type_doc: object) -> IcebergType:
    """The Iceberg type of one column of a schema file, or one line naming the column and the type."""
    try:
        return IcebergType.model_validate(type_doc)
    except Exception:
        shown = type_doc if isinstance(type_doc, str) else json.dumps(type_doc)[:200]
        raise ConfigurationError(
            f"schema column {name!r}: {shown!r} is not an Iceberg type (types: {_TYPE_NAMES})"
        ) from None


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
