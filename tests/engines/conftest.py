"""Fixtures of the engine tests: every engine on the same real services, S3 warehouse.

``engine`` is parametrised over the registered engines: ``arrow`` always, ``spark`` under the
``spark`` marker (``make test-spark``). For Spark, one real Spark Connect server per session:

The server is started with icefloe's own manager (``icefloe.engines.spark.server``, what ``icefloe
spark-server start`` runs): pyspark in its own virtualenv and the jars are taken from the cache
``ICEFLOE_SPARK_CACHE`` (default ``~/.cache/icefloe/spark``), installed there on first use
(``pip``, ``mvn``). The server reads the session's SeaweedFS; the session's embedded PostgreSQL
listens on 127.0.0.1 for the JDBC catalog. Each test gets its own database (so its own catalog)
and its own warehouse prefix; a Spark Connect session is per test database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from icefloe import embedded
from icefloe.runtime import Runtime
from icefloe.settings import Settings
from tests.support.engines import SparkServer

WAREHOUSE_BUCKET = "warehouse"
_ENV_PREFIXES = ("ICEFLOE_", "AWS_", "PYICEBERG_", "SPARK_")


def spark_cache() -> Path:
    return Path(os.environ.get("ICEFLOE_SPARK_CACHE") or Path.home() / ".cache" / "icefloe" / "spark")


@pytest.fixture(scope="session")
def pg_tcp_port(embedded_pg_home: Path | None) -> int | None:
    """The session PostgreSQL's 127.0.0.1 port (JDBC needs TCP); None with ICEFLOE_TEST_DATABASE_URL."""
    if embedded_pg_home is None:
        return None
    return embedded.ensure_postgres_tcp(embedded_pg_home)[1]


def _spark_cli(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    icefloe = str(Path(sys.executable).parent / "icefloe")
    return subprocess.run([icefloe, "spark-server", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def spark_server(s3: embedded.SeaweedS3, pg_tcp_port: int | None) -> Iterator[SparkServer]:
    """One server per session, started and stopped with the real `icefloe spark-server` commands."""
    pytest.importorskip("pyspark.sql.connect.session", reason="the Spark Connect client (icefloe[spark])")
    embedded.create_bucket(s3, WAREHOUSE_BUCKET)
    home = Path(tempfile.mkdtemp(prefix="icefloe-test-spark-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    env.update(s3.env(), ICEFLOE_HOME=str(home), ICEFLOE_SPARK_CACHE=str(spark_cache()))
    port = embedded.free_ports(1)[0]
    started = time.monotonic()
    proc = _spark_cli(env, "start", "--port", str(port), "--driver-memory", "1g", "--json")
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        status = json.loads(proc.stdout.strip().splitlines()[-1])
        from pyspark.sql import SparkSession

        warm = SparkSession.builder.remote(status["remote"]).create()
        warm.range(1).count()
        server = SparkServer(status["remote"], env, time.monotonic() - started)
        print(f"\nSpark Connect server up and warm in {server.startup_seconds:.1f} s at {server.remote}")
        yield server
    finally:
        from icefloe.engines.spark import session as sessions

        sessions.close_sessions()
        stopped = _spark_cli(env, "stop", timeout=120)
        print(stopped.stdout.strip())
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def spark_env(icefloe_env: dict[str, str], spark_server: SparkServer, pg_tcp_port: int | None) -> dict[str, str]:
    """``icefloe_env`` for the Spark engine: TCP database URL, S3 warehouse, the server's remote."""
    env = dict(icefloe_env)
    url = make_url(env["ICEFLOE_DATABASE_URL"])
    if pg_tcp_port is not None:
        url = url.set(host="127.0.0.1", port=pg_tcp_port, query={})
    env["ICEFLOE_DATABASE_URL"] = url.render_as_string(hide_password=False)
    env["ICEFLOE_WAREHOUSE"] = f"s3://{WAREHOUSE_BUCKET}/{uuid.uuid4().hex[:12]}"
    env["ICEFLOE_SPARK_REMOTE"] = spark_server.remote
    return env


@pytest.fixture(params=["arrow", pytest.param("spark", marks=pytest.mark.spark)])
def engine(request: pytest.FixtureRequest) -> str:
    """The engine under test (the contract suite runs once per engine)."""
    return str(request.param)


@pytest.fixture
def engine_env(
    engine: str, request: pytest.FixtureRequest, icefloe_env: dict[str, str], s3: embedded.SeaweedS3
) -> dict[str, str]:
    """``icefloe_env`` for ``engine``, with an S3 warehouse of the test's own."""
    if engine == "spark":
        return dict(request.getfixturevalue("spark_env"))
    embedded.create_bucket(s3, WAREHOUSE_BUCKET)
    return dict(icefloe_env, ICEFLOE_WAREHOUSE=f"s3://{WAREHOUSE_BUCKET}/{uuid.uuid4().hex[:12]}")


@pytest.fixture
def ert(engine_env: dict[str, str]) -> Iterator[Runtime]:
    """A Runtime on the test's services, from the settings the CLI would read from ``engine_env``
    (this process's environment is not used)."""
    runtime = Runtime.open(Settings.from_env(engine_env))
    try:
        yield runtime
    finally:
        from icefloe.engines.spark import session as sessions

        sessions.close_sessions()
        runtime.close()
        if "catalog" in runtime.__dict__:
            engine = getattr(runtime.catalog, "engine", None)
            if engine is not None:
                engine.dispose()
