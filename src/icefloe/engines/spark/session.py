"""Spark Connect sessions, with the ``icefloe`` Iceberg catalog configured for this process.

One catalog for both engines: pyiceberg's SQL catalog and Iceberg's Java JDBC catalog share the
tables ``iceberg_tables`` and ``iceberg_namespace_properties`` of one PostgreSQL database when
the Spark catalog has the *same name* as the pyiceberg catalog (the name is part of every key)
and ``jdbc.schema-version=V1``. The JDBC settings are derived from icefloe's own catalog (never
typed twice) and set on the client's session: Spark Connect sessions are isolated, and catalog
settings (``spark.sql.catalog.*``) are session settings, so one server serves any number of
ledgers. With ``ICEFLOE_SPARK_CATALOG=server`` the cluster's own catalog of that name is used
as configured there (e.g. a Databricks/EMR cluster whose catalog points at the same database).

Credentials for S3 are never sent from here: the Spark side uses its own (environment, instance
profile). Only the endpoint, path style and region of a non-AWS S3 are passed along.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pyiceberg.catalog import Catalog
from sqlalchemy.engine import make_url

from icefloe.engines.spark.failures import one_line
from icefloe.errors import ConfigurationError
from icefloe.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REMOTE_ENV = "ICEFLOE_SPARK_REMOTE"
DEFAULT_SCHEME = "s3a"
# How this session writes the Parquet files icefloe commits: Iceberg wants microsecond timestamps
# (Spark's default is INT96); set per session so any cluster behaves the same.
WRITER_CONF = {"spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS"}

_sessions: dict[tuple[str, tuple[tuple[str, str], ...]], SparkSession] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class SparkTarget:
    """Where and how this process talks to Spark."""

    remote: str
    catalog_name: str
    catalog_conf: dict[str, str]  # session settings; empty when the server's catalog is used
    scheme: str  # URI scheme Spark reads s3:// objects through (s3a, or s3 on EMR/Databricks)


def resolve_remote(ingestion_remote: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    remote = ingestion_remote or env.get(REMOTE_ENV) or env.get("SPARK_REMOTE")
    if not remote:
        raise ConfigurationError(
            "the Spark engine needs a Spark Connect server: set ICEFLOE_SPARK_REMOTE "
            "(e.g. sc://localhost:15002; `icefloe spark-server start` runs one) or --spark-remote"
        )
    if not remote.startswith("sc://"):
        raise ConfigurationError(f"a Spark Connect remote looks like sc://host:15002, got {remote!r}")
    return remote


def jdbc_settings(database_url: str, settings: Settings) -> tuple[str, str | None, str | None]:
    """(JDBC URL, user, password) for the PostgreSQL behind ``database_url``.

    The JDBC driver speaks TCP only. A Unix-socket URL of the embedded PostgreSQL (no
    ``ICEFLOE_DATABASE_URL``) is switched to its 127.0.0.1 listener, started on demand.
    """
    url = make_url(database_url)
    if not url.drivername.startswith("postgresql"):
        raise ConfigurationError(f"the Spark engine's JDBC catalog needs PostgreSQL, not {url.drivername}")
    host, port = url.host, url.port
    query_host = url.query.get("host")
    if isinstance(query_host, tuple):
        query_host = query_host[0] if query_host else None
    if not host and query_host and str(query_host).startswith("/"):
        if settings.database_url is None:
            from icefloe import embedded

            _url, tcp_port = embedded.ensure_postgres_tcp(settings.home)
            host, port = "127.0.0.1", tcp_port
        else:
            raise ConfigurationError(
                "the Spark engine's JDBC catalog cannot use a Unix-socket database URL: "
                "give ICEFLOE_DATABASE_URL with host and port"
            )
    if not host:
        host = "localhost"
    jdbc = f"jdbc:postgresql://{host}:{port or 5432}/{url.database or ''}"
    extra = {k: v for k, v in url.query.items() if k in ("sslmode", "options")}
    if extra:
        jdbc += "?" + "&".join(f"{k}={v if isinstance(v, str) else v[0]}" for k, v in extra.items())
    return jdbc, url.username, url.password


def catalog_conf(catalog: Catalog, settings: Settings) -> dict[str, str]:
    """Session settings that make Spark's catalog ``catalog.name`` the same catalog as ``catalog``."""
    from pyiceberg.catalog.sql import SqlCatalog

    if not isinstance(catalog, SqlCatalog):
        raise ConfigurationError(
            f"the Spark engine can configure its catalog only from a pyiceberg SQL catalog; for "
            f"{type(catalog).__name__} configure a catalog named {catalog.name!r} on the Spark cluster "
            "and set ICEFLOE_SPARK_CATALOG=server"
        )
    props: dict[str, Any] = dict(catalog.properties)
    warehouse = str(props.get("warehouse", ""))
    if not warehouse.startswith(("s3://", "s3a://")):
        raise ConfigurationError(
            "the Spark engine shares the Iceberg catalog with pyiceberg only on an S3 warehouse: "
            "set ICEFLOE_WAREHOUSE=s3://bucket/path"
        )
    jdbc, user, password = jdbc_settings(str(props["uri"]), settings)
    prefix = f"spark.sql.catalog.{catalog.name}"
    conf = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.type": "jdbc",
        f"{prefix}.uri": jdbc,
        f"{prefix}.jdbc.schema-version": "V1",
        f"{prefix}.warehouse": warehouse,
        f"{prefix}.io-impl": "org.apache.iceberg.io.ResolvingFileIO",
        f"{prefix}.cache-enabled": "false",  # see every commit of the other engine at once
    }
    if user:
        conf[f"{prefix}.jdbc.user"] = user
    if password:
        conf[f"{prefix}.jdbc.password"] = password
    endpoint = props.get("s3.endpoint") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        conf[f"{prefix}.s3.endpoint"] = str(endpoint)
        conf[f"{prefix}.s3.path-style-access"] = "true"
    region = props.get("s3.region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region or endpoint:
        conf[f"{prefix}.client.region"] = str(region or "us-east-1")
    return conf


def target_for(
    catalog: Catalog, settings: Settings, ingestion_remote: str | None, environ: Mapping[str, str] | None = None
) -> SparkTarget:
    env = os.environ if environ is None else environ
    remote = resolve_remote(ingestion_remote, env)
    mode = env.get("ICEFLOE_SPARK_CATALOG", "client")
    if mode not in ("client", "server"):
        raise ConfigurationError(f"ICEFLOE_SPARK_CATALOG must be client or server, got {mode!r}")
    conf = catalog_conf(catalog, settings) if mode == "client" else {}
    scheme = env.get("ICEFLOE_SPARK_SCHEME", DEFAULT_SCHEME)
    if scheme not in ("s3a", "s3", "s3n"):
        raise ConfigurationError(f"ICEFLOE_SPARK_SCHEME must be s3a or s3, got {scheme!r}")
    return SparkTarget(remote=remote, catalog_name=catalog.name, catalog_conf=conf, scheme=scheme)


def session(target: SparkTarget) -> SparkSession:
    """A Spark Connect session for ``target``, created once per process and reused."""
    from icefloe import engines

    engines.require("spark")
    from pyspark.sql import SparkSession

    key = (target.remote, tuple(sorted(target.catalog_conf.items())))
    with _lock:
        spark = _sessions.get(key)
        if spark is not None:
            return spark
        try:
            spark = cast("SparkSession", SparkSession.builder.remote(target.remote).create())
            for name, value in {**WRITER_CONF, **target.catalog_conf}.items():
                spark.conf.set(name, value)
        except Exception as exc:
            raise ConfigurationError(
                f"cannot open a Spark Connect session on {target.remote}: {one_line(exc)}"
            ) from exc
        _sessions[key] = spark
        return spark


def close_sessions() -> None:
    """Release every session of this process on its server (also done at exit)."""
    with _lock:
        sessions = list(_sessions.values())
        _sessions.clear()
    for spark in sessions:
        with contextlib.suppress(Exception):  # the server may be gone already
            spark.stop()


atexit.register(close_sessions)


__all__ = ["SparkTarget", "close_sessions", "session", "target_for"]
