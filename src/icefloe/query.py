"""`icefloe sql`: read-only SQL over the catalog's Iceberg tables, with DuckDB.

A query names tables as ``namespace.table``, as ``--table`` does. DuckDB's parser finds those
names (``json_serialize_sql``: the statement's syntax tree, so names inside CTEs, joins and
subqueries are found and string literals or comments are not mistaken for names); each one is
resolved through pyiceberg to the table's *current* metadata file and registered as a view over
``iceberg_scan(<metadata file>)``. DuckDB then reads the manifests and the Parquet data files
itself, with its own predicate and column pruning.

The ``iceberg``, ``avro`` and ``httpfs`` extensions come from the PyPI packages
``duckdb-ext-*`` and are loaded from their files: nothing is downloaded at run time. Only one
statement, of type SELECT, is run (``EXPLAIN`` too); anything else is refused before it reaches
DuckDB.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from icefloe.errors import ConfigurationError, IcefloeError

if TYPE_CHECKING:
    import duckdb
    from pyiceberg.catalog import Catalog

# Schemas DuckDB itself answers (e.g. information_schema.tables): never looked up in the catalog.
_DUCKDB_SCHEMAS = {"information_schema", "pg_catalog", "main", "temp", "system"}
_ALLOWED = {"SELECT", "EXPLAIN"}


class QueryError(IcefloeError):
    """The query could not be parsed, bound or run; the message is DuckDB's, on one line."""


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query: ``rows`` holds at most ``limit`` rows; ``truncated`` when there were more."""

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def extension_directory() -> Path:
    """The folder the ``duckdb-ext-*`` packages install into (``duckdb_ext/extensions``).

    DuckDB looks for ``<dir>/v<version>/<platform>/<name>.duckdb_extension`` there, so setting it
    as DuckDB's ``extension_directory`` makes ``LOAD iceberg`` (and its autoload of ``avro``) use
    the packaged files.
    """
    spec = importlib.util.find_spec("duckdb_ext")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "extensions"
        if candidate.is_dir():
            return candidate
    raise ConfigurationError(
        "DuckDB's Iceberg extension is not installed: pip install duckdb-ext-iceberg duckdb-ext-avro duckdb-ext-httpfs"
    )


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the packaged extensions available (autoload on, download off)."""
    import duckdb

    directory = extension_directory()
    con = duckdb.connect(
        config={
            "extension_directory": str(directory),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": True,
        }
    )
    try:
        con.execute("LOAD iceberg")
    except duckdb.Error as exc:
        raise ConfigurationError(
            f"cannot load DuckDB's iceberg extension from {directory} (duckdb {duckdb.__version__}; the "
            f"duckdb-ext-* packages must be of the same release): {_one_line(exc)}"
        ) from exc
    return con


def single_select(query: str) -> None:
    """Refuse anything but one SELECT (or EXPLAIN) statement: `icefloe sql` never writes."""
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(_one_line(exc)) from exc
    if not statements:
        raise ConfigurationError("no SQL statement given")
    if len(statements) > 1:
        raise ConfigurationError(f"one statement at a time, got {len(statements)}")
    kind = statements[0].type.name
    if kind not in _ALLOWED:
        raise ConfigurationError(f"icefloe sql is read-only: {kind} statements are refused (SELECT only)")


def _base_tables(node: Any) -> Iterator[tuple[str, ...]]:
    """Every table reference in a serialised syntax tree, as its non-empty name parts."""
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE" and "table_name" in node:
            parts = (node.get("catalog_name", ""), node.get("schema_name", ""), node["table_name"])
            yield tuple(p for p in parts if p)
        for value in node.values():
            yield from _base_tables(value)
    elif isinstance(node, list):
        for value in node:
            yield from _base_tables(value)


def table_references(con: duckdb.DuckDBPyConnection, query: str) -> list[tuple[str, ...]]:
    """Qualified table names (``ns.table`` or ``a.b.table``) the query reads, in order, once each."""
    row = con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
    tree = json.loads(row[0]) if row else {}
    if tree.get("error"):
        raise QueryError(str(tree.get("error_message", "cannot parse the query")))
    found: dict[tuple[str, ...], None] = {}
    for parts in _base_tables(tree.get("statements", [])):
        if len(parts) >= 2 and parts[-2].lower() not in _DUCKDB_SCHEMAS:
            found[parts] = None
    return list(found)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def s3_secret_sql(name: str, scope: str, props: Mapping[str, str]) -> str:
    """A DuckDB ``CREATE SECRET`` for an S3 location from pyiceberg's FileIO properties."""
    options = ["TYPE s3", f"SCOPE {_literal(scope)}"]
    mapping = {
        "s3.access-key-id": "KEY_ID",
        "s3.secret-access-key": "SECRET",
        "s3.session-token": "SESSION_TOKEN",
        "s3.region": "REGION",
    }
    options += [f"{option} {_literal(str(props[key]))}" for key, option in mapping.items() if props.get(key)]
    endpoint = props.get("s3.endpoint")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options += [
            f"ENDPOINT {_literal(parts.netloc)}",
            "URL_STYLE 'path'",
            f"USE_SSL {'true' if parts.scheme == 'https' else 'false'}",
        ]
    return f"CREATE OR REPLACE SECRET {_quote(name)} ({', '.join(options)})"


def _aws_sdk_credentials() -> dict[str, str]:
    """The AWS SDK's own credentials and region (environment, profile, instance role)."""
    import boto3

    session = boto3.Session()
    props: dict[str, str] = {}
    creds = session.get_credentials()
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        props.update({"s3.access-key-id": frozen.access_key or "", "s3.secret-access-key": frozen.secret_key or ""})
        if frozen.token:
            props["s3.session-token"] = frozen.token
    if session.region_name:
        props["s3.region"] = session.region_name
    endpoint = session.client("s3").meta.endpoint_url
    if endpoint and "amazonaws.com" not in endpoint:
        props["s3.endpoint"] = endpoint
    return props


def register_tables(con: duckdb.DuckDBPyConnection, catalog: Catalog, references: list[tuple[str, ...]]) -> None:
    """A view ``ns.table`` over ``iceberg_scan(<current metadata file>)`` for each reference.

    S3 tables get a DuckDB secret scoped to their bucket, from the table's FileIO properties
    (the catalog's S3 settings, or credentials a REST catalog vended), else the AWS SDK's own.
    """
    import duckdb
    from pyiceberg.exceptions import NoSuchTableError

    databases: set[str] = set()
    for n, parts in enumerate(references):
        identifier = ".".join(parts)
        try:
            table = catalog.load_table(identifier)
        except NoSuchTableError:
            raise ConfigurationError(f"no Iceberg table {identifier} in the catalog (icefloe table list)") from None
        metadata = table.metadata_location
        if metadata.startswith(("s3://", "s3a://")):
            con.execute("LOAD httpfs")
            bucket = urlsplit(metadata).netloc
            props = {k: str(v) for k, v in table.io.properties.items()}
            if not props.get("s3.access-key-id"):
                props = _aws_sdk_credentials() | {k: v for k, v in props.items() if v}
            con.execute(s3_secret_sql(f"icefloe_{n}", f"s3://{bucket}/", props))
        *outer, schema, name = parts
        try:
            if outer:  # a nested namespace a.b.table: DuckDB's catalog a, schema b
                database = ".".join(outer)
                if database not in databases:
                    con.execute(f"ATTACH ':memory:' AS {_quote(database)}")
                    databases.add(database)
                schema_ref = f"{_quote(database)}.{_quote(schema)}"
            else:
                schema_ref = _quote(schema)
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_ref}")
            con.execute(
                f"CREATE OR REPLACE VIEW {schema_ref}.{_quote(name)} AS "
                f"SELECT * FROM iceberg_scan({_literal(metadata)})"
            )
        except duckdb.Error as exc:
            raise QueryError(f"cannot read table {identifier} ({metadata}): {_one_line(exc)}") from exc


def run(catalog: Catalog, query: str, *, limit: int | None) -> QueryResult:
    """Run one read-only ``query`` over the catalog's tables; at most ``limit`` rows (None: all)."""
    import duckdb

    single_select(query)
    con = connect()
    try:
        register_tables(con, catalog, table_references(con, query))
        # Nothing the query runs may change settings (e.g. turn external access back on).
        con.execute("SET lock_configuration = true")
        try:
            # Through Arrow: DuckDB's own Python conversion of timestamptz needs pytz.
            reader = con.execute(query).fetch_record_batch(2048)
            batches, count = [], 0
            for batch in reader:
                batches.append(batch)
                count += batch.num_rows
                if limit is not None and count > limit:
                    break
        except duckdb.Error as exc:
            raise QueryError(_one_line(exc)) from exc
        schema = reader.schema
        rows = [tuple(r.values()) for b in batches for r in b.to_pylist()]
    finally:
        con.close()
    truncated = limit is not None and len(rows) > limit
    columns, types = schema.names, [str(t) for t in schema.types]
    return QueryResult(columns, types, rows[:limit] if truncated else rows, truncated)
