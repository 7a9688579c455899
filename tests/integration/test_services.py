"""The test services themselves: S3 round trips, database isolation, loopback-only listeners."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import psutil
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError
from sqlalchemy.engine import make_url

from icefloe import embedded

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.support.services import PutObjects


def _inet_listeners(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on (Unix sockets excluded)."""
    return [
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]


def _postmaster_pid(url: str) -> int:
    """Pid of the server's postmaster: the parent of this connection's backend."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            parent = psutil.Process(backend).parent()  # while the backend lives
    finally:
        engine.dispose()
    assert parent is not None
    return parent.pid


def test_bucket_holds_many_objects_listed_through_pages(
    bucket: str, put_objects: PutObjects, s3_client: S3Client
) -> None:
    objects = {f"events/dt=2025-01-{i % 3 + 1:02d}/part-{i:05d}.jsonl": b"%d\n" % i for i in range(1500)}
    assert put_objects(bucket, objects) == 1500

    pages = list(s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="events/"))
    listed = {obj["Key"]: obj["Size"] for page in pages for obj in page.get("Contents", [])}

    assert len(pages) == 2  # 1,000 keys a page
    assert len(listed) == 1500
    assert listed == {key: len(body) for key, body in objects.items()}
    body = s3_client.get_object(Bucket=bucket, Key="events/dt=2025-01-01/part-00000.jsonl")["Body"].read()
    assert body == b"0\n"


def test_bucket_is_new_and_empty(bucket: str, s3_client: S3Client) -> None:
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_s3_requires_credentials(s3: embedded.SeaweedS3, bucket: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key="not-the-secret",
        region_name=s3.region,
    )
    with pytest.raises(ClientError) as caught:
        client.list_objects_v2(Bucket=bucket)
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_databases_are_isolated_copies_of_the_template(make_database: Callable[[], str]) -> None:
    first, second = make_database(), make_database()
    assert make_url(first).database != make_url(second).database

    engine_a = sa.create_engine(first, poolclass=sa.NullPool)
    engine_b = sa.create_engine(second, poolclass=sa.NullPool)
    try:
        with engine_a.begin() as conn:
            conn.execute(sa.text("CREATE TABLE marker (v text)"))
            conn.execute(sa.text("INSERT INTO marker VALUES ('a')"))
        with engine_a.connect() as a, engine_b.connect() as b:
            assert a.execute(sa.text("SELECT v FROM marker")).scalar_one() == "a"
            assert b.execute(sa.text("SELECT to_regclass('marker')")).scalar_one() is None
            # both are copies of the same (migrated) template
            tables = sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            assert set(a.execute(tables).scalars()) - {"marker"} == set(b.execute(tables).scalars())
    finally:
        engine_a.dispose()
        engine_b.dispose()


_seen_databases: list[str] = []


@pytest.mark.parametrize("turn", [1, 2])
def test_database_url_is_per_test_and_dropped(turn: int, database_url: str, pg_admin: sa.Engine) -> None:
    name = make_url(database_url).database
    assert name is not None and name.startswith("test_")
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_here (turn int)"))
            conn.execute(sa.text("INSERT INTO only_here VALUES (:turn)"), {"turn": turn})
            assert conn.execute(sa.text("SELECT count(*) FROM only_here")).scalar_one() == 1
    finally:
        engine.dispose()
    if _seen_databases:  # the previous turn's database is gone
        with pg_admin.connect() as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_database WHERE datname = :name"),
                {"name": _seen_databases[-1]},
            ).scalar_one()
        assert left == 0
    _seen_databases.append(name)


def test_seaweedfs_listens_on_loopback_only(s3: embedded.SeaweedS3) -> None:
    listeners = _inet_listeners(s3.pid)
    s3_port = int(s3.endpoint.rsplit(":", 1)[1])
    assert (("127.0.0.1", s3_port)) in listeners
    assert ("127.0.0.1", s3_port + 10_000) in listeners  # its gRPC port
    assert {address for address, _ in listeners} == {"127.0.0.1"}, listeners


def test_embedded_postgres_listens_on_no_tcp_address(embedded_pg_home: Path | None, pg_url: str) -> None:
    if embedded_pg_home is None:
        pytest.skip("ICEFLOE_TEST_DATABASE_URL: not an embedded server")
    assert make_url(pg_url).query["host"] == str(embedded_pg_home.resolve() / "postgres")
    assert _inet_listeners(_postmaster_pid(pg_url)) == []


def test_embedded_postgres_tcp_listener_is_loopback_and_keeps_socket_url() -> None:
    # A server of its own: turning TCP on restarts the server, which the session's must not see.
    home = Path(tempfile.mkdtemp(prefix="icefloe-test-pgtcp-"))
    try:
        socket_url = embedded.ensure_postgres(home)
        engine = sa.create_engine(socket_url, pool_pre_ping=True)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "icefloe"
        assert _inet_listeners(_postmaster_pid(socket_url)) == []

        tcp_url, port = embedded.ensure_postgres_tcp(home)
        assert tcp_url == f"postgresql+psycopg://postgres@127.0.0.1:{port}/icefloe"
        assert embedded.ensure_postgres(home) == socket_url  # same socket, same port
        assert _inet_listeners(_postmaster_pid(tcp_url)) == [("127.0.0.1", port)]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        tcp_engine = sa.create_engine(tcp_url, poolclass=sa.NullPool)
        with tcp_engine.connect() as conn:
            assert str(conn.execute(sa.text("SELECT inet_server_addr()")).scalar_one()) == "127.0.0.1"
        # the pooled socket connection died in the restart; pre-ping reconnects
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        engine.dispose()
        assert embedded.ensure_postgres_tcp(home) == (tcp_url, port)  # already on: no restart
    finally:
        postmaster = home / "postgres" / "postmaster.pid"
        pid = int(postmaster.read_text().split()[0]) if postmaster.exists() else None
        embedded.release_postgres(home)
        if pid is not None:  # this test held the only handle: the server is stopped
            assert not postmaster.exists()
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        shutil.rmtree(home, ignore_errors=True)
