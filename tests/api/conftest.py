"""Fixtures of the API tests: the real ``icefloe serve`` in a subprocess against the session's
PostgreSQL and SeaweedFS, with a token per role.

``start_api`` starts servers on the test's own database (``icefloe_env``); tests that only need a
server to call share one per module (``module_api``, on a database of the module's own).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from icefloe import embedded
from tests.support.api import ApiServer, make_tokens
from tests.support.services import service_env


@pytest.fixture
def db_engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def start_api(icefloe_env: dict[str, str], database_url: str, tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """``start_api(with_worker=False, **env)``: a server on this test's database; stopped after it."""
    servers: list[ApiServer] = []

    def start(with_worker: bool = False, **extra_env: str) -> ApiServer:
        server = ApiServer(env=icefloe_env | extra_env, log=tmp_path / f"serve-{len(servers)}.log")
        server.with_worker = with_worker
        servers.append(server)
        server.start()
        server.tokens = make_tokens(database_url)
        return server

    yield start
    for server in servers:
        server.kill()


def _database(pg_url: str, name: str) -> str:
    return make_url(pg_url).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def module_database_url(pg_url: str, pg_admin: sa.Engine, template_database: str) -> Iterator[str]:
    name = f"test_api_{uuid.uuid4().hex}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    yield _database(pg_url, name)
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def module_api(
    module_database_url: str, s3: embedded.SeaweedS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """A server (no worker) on a database of this module's own, with a token per role."""
    home = tmp_path_factory.mktemp("api")
    server = ApiServer(env=service_env(module_database_url, s3, home), log=home / "serve.log")
    server.start()
    server.tokens = make_tokens(module_database_url)
    yield server
    assert server.stop() == 0, server.log_text()
