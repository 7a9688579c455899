"""`icefloe catalog connect`: ready-to-paste configuration that points other engines at icefloe's catalog.

The catalog's properties are pyiceberg's (the catalog icefloe loaded); from them come a
``.pyiceberg.yaml`` block, ``PYICEBERG_CATALOG__…`` variables, Spark ``--conf`` lines (Iceberg's
JDBC catalog shares the tables of pyiceberg's SQL catalog: same catalog name,
``jdbc.schema-version=V1``) and DuckDB statements (a view per table over its current metadata
file). Secrets are replaced by ``<redacted>`` unless asked for.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from icefloe import query
from icefloe.errors import ConfigurationError
from icefloe.settings import Settings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

FORMATS = ("pyiceberg", "spark", "duckdb", "env")
REDACTED = "<redacted>"
_SECRET_WORDS = ("secret", "password", "token", "credential")
_SPARK_PACKAGES = (
    "org.apache.iceberg:iceberg-spark-runtime-4.0_2.13:1.10.2,org.apache.iceberg:iceberg-aws-bundle:1.10.1,"
    "org.postgresql:postgresql:42.7.8"
)
_TYPES = {"SqlCatalog": "sql", "RestCatalog": "rest", "GlueCatalog": "glue", "HiveCatalog": "hive"}


def catalog_properties(settings: Settings, catalog: Catalog, services: Mapping[str, Any] | None) -> dict[str, str]:
    """The properties another process needs to open the same catalog (``type`` included).

    The default catalog lives in the ledger database; when that is the embedded PostgreSQL, only
    a running ``icefloe services start`` makes it reachable from outside (a fixed TCP port).
    """
    props = {k: str(v) for k, v in catalog.properties.items() if k not in ("pool_pre_ping", "init_catalog_tables")}
    props.setdefault("type", _TYPES.get(type(catalog).__name__, type(catalog).__name__))
    if settings.catalog_name is None and settings.database_url is None:
        if services is None:
            raise ConfigurationError(
                "the embedded PostgreSQL holding the catalog runs only while an icefloe command runs: "
                "run `icefloe services start` first (it keeps it on a fixed port), then this again"
            )
        props["uri"] = str(services["postgres"]["url"])
    return props


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def redact(props: Mapping[str, str]) -> dict[str, str]:
    """``props`` with secret values and passwords in URLs replaced by ``<redacted>``."""
    out: dict[str, str] = {}
    for key, value in props.items():
        if _is_secret(key):
            value = REDACTED
        elif "://" in value and "@" in value:
            try:
                url = make_url(value)
            except Exception:  # not a database URL: leave it
                pass
            else:
                if url.password:
                    value = url.set(password=REDACTED).render_as_string(hide_password=False)
        out[key] = value
    return out


def pyiceberg_yaml(name: str, props: Mapping[str, str]) -> str:
    lines = [
        "# ~/.pyiceberg.yaml (or $PYICEBERG_HOME/.pyiceberg.yaml); then, in Python:",
        f"#   from pyiceberg.catalog import load_catalog; load_catalog({name!r}).load_table('ns.table')",
        "catalog:",
        f"  {name}:",
    ]
    # JSON strings are valid YAML scalars: every value stays literal whatever it holds.
    lines += [f"    {key}: {json.dumps(value)}" for key, value in props.items()]
    return "\n".join(lines)


def env_lines(name: str, props: Mapping[str, str]) -> str:
    def var(key: str) -> str:
        # pyiceberg reads PYICEBERG_CATALOG__<NAME>__<PROP>: "__" is a dot, "_" a hyphen.
        return f"PYICEBERG_CATALOG__{name.upper()}__" + key.replace(".", "__").replace("-", "_").upper()

    return "\n".join(f"export {var(key)}={shlex.quote(value)}" for key, value in props.items())


def spark_conf(name: str, props: Mapping[str, str], settings: Settings) -> str:
    prefix = f"spark.sql.catalog.{name}"
    conf = {prefix: "org.apache.iceberg.spark.SparkCatalog"}
    kind = props.get("type", "")
    if kind == "sql":
        from icefloe.engines.spark.session import jdbc_settings

        jdbc, user, password = jdbc_settings(props["uri"], settings)
        conf |= {f"{prefix}.type": "jdbc", f"{prefix}.uri": jdbc, f"{prefix}.jdbc.schema-version": "V1"}
        if user:
            conf[f"{prefix}.jdbc.user"] = user
        if password:
            conf[f"{prefix}.jdbc.password"] = password
    elif kind in ("rest", "glue", "hive"):
        conf[f"{prefix}.type"] = kind
        conf |= {f"{prefix}.{k}": v for k, v in props.items() if k in ("uri", "credential", "token", "warehouse")}
    else:
        raise ConfigurationError(f"no Spark configuration is known for a {kind} catalog")
    if props.get("warehouse"):
        conf[f"{prefix}.warehouse"] = props["warehouse"]
    if props.get("warehouse", "").startswith("s3"):
        conf[f"{prefix}.io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO"
        if props.get("s3.endpoint"):
            conf[f"{prefix}.s3.endpoint"] = props["s3.endpoint"]
            conf[f"{prefix}.s3.path-style-access"] = "true"
        for key, spark_key in (("s3.access-key-id", "access-key-id"), ("s3.secret-access-key", "secret-access-key")):
            if props.get(key):
                conf[f"{prefix}.s3.{spark_key}"] = props[key]
        if props.get("s3.region"):
            conf[f"{prefix}.client.region"] = props["s3.region"]
    lines = [f"--packages {_SPARK_PACKAGES}"] + [f"--conf {shlex.quote(f'{k}={v}')}" for k, v in conf.items()]
    return "# spark-sql / pyspark / spark-submit options:\n" + " \\\n".join(lines)


def duckdb_sql(catalog: Catalog, props: Mapping[str, str], *, show_secrets: bool) -> str:
    """DuckDB statements: the packaged extensions, an S3 secret, one view per table (current snapshot)."""
    lines = [
        "-- DuckDB: one view per table, over the snapshot current now (run this command again after new runs)",
        f"SET extension_directory = {query._literal(str(query.extension_directory()))};",
        "LOAD iceberg;",
    ]
    tables = [
        catalog.load_table(identifier)
        for namespace in catalog.list_namespaces()
        for identifier in catalog.list_tables(namespace)
    ]
    buckets: dict[str, dict[str, str]] = {}
    for table in tables:
        if table.metadata_location.startswith(("s3://", "s3a://")):
            io = {k: str(v) for k, v in table.io.properties.items()} or dict(props)
            buckets.setdefault(table.metadata_location.split("/")[2], io)
    if buckets:
        lines.append("LOAD httpfs;")
    for n, (bucket, io) in enumerate(buckets.items()):
        shown = io if show_secrets else redact(io)
        lines.append(query.s3_secret_sql(f"icefloe_{n}", f"s3://{bucket}/", shown) + ";")
    for table in tables:
        *namespace, name = table.name()
        schema = query._quote(".".join(namespace))
        lines.append(f"CREATE SCHEMA IF NOT EXISTS {schema};")
        lines.append(
            f"CREATE OR REPLACE VIEW {schema}.{query._quote(name)} AS "
            f"SELECT * FROM iceberg_scan({query._literal(table.metadata_location)});"
        )
    if not tables:
        lines.append("-- (the catalog has no tables yet)")
    return "\n".join(lines)


def render(
    fmt: str, settings: Settings, catalog: Catalog, services: Mapping[str, Any] | None, *, show_secrets: bool
) -> str:
    """The configuration in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ConfigurationError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    props = catalog_properties(settings, catalog, services)
    if fmt == "duckdb":
        return duckdb_sql(catalog, props, show_secrets=show_secrets)
    if fmt == "spark":
        text = spark_conf(catalog.name, props, settings)
        return text if show_secrets else _redact_conf(text, props)
    shown = props if show_secrets else redact(props)
    return pyiceberg_yaml(catalog.name, shown) if fmt == "pyiceberg" else env_lines(catalog.name, shown)


def _redact_conf(text: str, props: Mapping[str, str]) -> str:
    secrets = [v for k, v in props.items() if _is_secret(k) and v]
    for key, value in props.items():
        if key == "uri" and "://" in value:
            password = make_url(value).password if value.startswith("postgresql") else None
            if password:
                secrets.append(str(password))
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text
