"""The Spark engine's pure parts, without a server: they run in `make test` too (no pyspark needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from icefloe import engines
from icefloe.engines.spark import jars, server
from icefloe.engines.spark.engine import SparkEngine
from icefloe.engines.spark.failures import file_error_type, is_infrastructure, one_line
from icefloe.engines.spark.session import SparkTarget, catalog_conf, jdbc_settings, resolve_remote
from icefloe.errors import ConfigurationError, IcefloeError
from icefloe.formats import ReadOptions
from icefloe.settings import Settings


def test_missing_client_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark.sql.connect.session", None)
    with pytest.raises(ConfigurationError) as info:
        engines.require("spark")
    message = str(info.value)
    assert "icefloe[spark]" in message and "\n" not in message


def test_remote_comes_from_the_ingestion_then_the_environment() -> None:
    assert resolve_remote("sc://a:1", {"ICEFLOE_SPARK_REMOTE": "sc://b:2"}) == "sc://a:1"
    assert resolve_remote(None, {"ICEFLOE_SPARK_REMOTE": "sc://b:2"}) == "sc://b:2"
    with pytest.raises(ConfigurationError, match="ICEFLOE_SPARK_REMOTE"):
        resolve_remote(None, {})
    with pytest.raises(ConfigurationError, match="sc://"):
        resolve_remote("http://x:1", {})


def test_jdbc_url_is_derived_from_the_ledger_url(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql+psycopg://u:p%40ss@db.internal:6543/ledger")
    assert jdbc_settings(str(settings.database_url), settings) == (
        "jdbc:postgresql://db.internal:6543/ledger",
        "u",
        "p@ss",
    )
    socket_url = "postgresql+psycopg://postgres@/icefloe?host=/tmp/sock&port=5999"
    with pytest.raises(ConfigurationError, match="Unix-socket"):
        jdbc_settings(socket_url, Settings(home=tmp_path, database_url=socket_url))


def test_catalog_conf_names_the_spark_catalog_like_pyiceberg(tmp_path: Path) -> None:
    catalog = SqlCatalog(
        "icefloe",
        uri=f"sqlite:///{tmp_path}/c.db",
        warehouse="s3://warehouse/x",
        **{"s3.endpoint": "http://127.0.0.1:9000"},
    )
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        catalog_conf(catalog, Settings(home=tmp_path))
    file_catalog = SqlCatalog("icefloe", uri=f"sqlite:///{tmp_path}/d.db", warehouse=f"file://{tmp_path}")
    with pytest.raises(ConfigurationError, match="S3 warehouse"):
        catalog_conf(file_catalog, Settings(home=tmp_path))


def _engine(scheme: str = "s3a") -> SparkEngine:
    return SparkEngine(
        target=SparkTarget("sc://x:1", "icefloe", {}, scheme),
        catalog=None,  # type: ignore[arg-type]
        table_identifier="ns.events",
        options=ReadOptions("jsonl"),
        infer_schema=True,
    )


def test_uris_map_to_spark_and_back() -> None:
    engine = _engine()
    assert engine.spark_uri("s3://b/dir/part-1.jsonl") == "s3a://b/dir/part-1.jsonl"
    assert engine.spark_uri("s3://b/a[1]*.json") == "s3a://b/a\\[1\\]\\*.json"  # no globbing
    assert engine._ledger_uri("s3a://b/weird%20key+plus.jsonl") == "s3://b/weird key+plus.jsonl"
    assert engine._exact_paths([]) == {}
    assert engine.spark_table == "`icefloe`.`ns`.`events`"
    assert _engine("s3").spark_uri("s3://b/k") == "s3://b/k"


def test_spark_errors_become_one_line_and_a_type() -> None:
    error = RuntimeError(
        "[MALFORMED_RECORD_IN_PARSING.WITHOUT_SUGGESTION] Malformed records are detected in record "
        "parsing: [null].\nParse Mode: FAILFAST.\n\nJVM stacktrace:\norg.apache.spark.SparkException\n\tat x"
    )
    line = one_line(error)
    assert "\n" not in line and "JVM stacktrace" not in line and line.startswith("[MALFORMED_RECORD")
    assert file_error_type(line, "jsonl") == "MalformedJSON"
    assert file_error_type("[CAST_INVALID_INPUT] The value 'x' cannot be cast", "csv") == "SchemaMismatch"
    assert file_error_type("Not a Parquet file (expected magic number)", "parquet") == "CorruptFile"
    assert is_infrastructure(RuntimeError("<_MultiThreadedRendezvous StatusCode.UNAVAILABLE ...>"))
    assert not is_infrastructure(RuntimeError(line))


def test_server_conf_is_loopback_only_and_quiet(tmp_path: Path) -> None:
    conf = server.server_conf(15002, tmp_path, [tmp_path / "a.jar"], {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert conf["spark.connect.grpc.binding.address"] == "127.0.0.1"
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert "rootLogger.level = warn" in server.LOG4J2
    assert {a.artifact for a in jars.JARS} >= {"iceberg-spark-runtime-4.0_2.13", "hadoop-aws", "postgresql"}


def test_status_of_no_server(tmp_path: Path) -> None:
    assert server.status(tmp_path) == {"running": False}
    assert server.stop(tmp_path) is None


def test_java_home_is_17_or_21() -> None:
    try:
        home = server.find_java_home()
    except IcefloeError:
        pytest.skip("no Java 17/21 here")
    assert server._java_major(home) in (17, 21)
