"""Fixtures of the API tests, with a token per role on the database the API serves.

In this process (``TestClient(create_app(settings))``, the fast way): ``module_api`` is one app per
module on a database of the module's own; ``make_api(api_settings)`` starts one on the test's own
database. As the real ``icefloe serve`` in a subprocess (tests marked ``server``): ``start_server``
on the test's database, ``module_server`` per module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from icefloe import embedded
from icefloe.api import ApiSettings
from icefloe.settings import Settings
from tests.support.api import ApiServer, InProcessApi, in_process_api, make_tokens
from tests.support.services import clone_database, drop_database, service_env


def settings_for(env: dict[str, str]) -> Settings:
    """The Settings ``icefloe serve`` builds from ``env`` (one place: create_app's call site)."""
    return Settings.from_env(env)


@pytest.fixture
def db_engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def module_database_url(pg_url: str, pg_admin: sa.Engine, template_database: str) -> Iterator[str]:
    url = clone_database(pg_admin, pg_url, template_database, prefix="test_api")
    yield url
    drop_database(pg_admin, url)


@pytest.fixture(scope="module")
def module_env(
    module_database_url: str, s3: embedded.SeaweedS3, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment of an ``icefloe`` process on the module's database."""
    return service_env(module_database_url, s3, tmp_path_factory.mktemp("api")) | {"ICEFLOE_LOG_FORMAT": "json"}


@pytest.fixture(scope="module")
def module_api(module_env: dict[str, str], module_database_url: str) -> Iterator[InProcessApi]:
    """The API (no worker) in this process, on a database of this module's own."""
    with in_process_api(settings_for(module_env), database_url=module_database_url) as api:
        yield api


@pytest.fixture
def make_api(icefloe_env: dict[str, str], database_url: str) -> Iterator[Callable[..., InProcessApi]]:
    """``make_api(api_settings=None)``: the API in this process on this test's database."""
    with ExitStack() as stack:

        def make(api_settings: ApiSettings | None = None) -> InProcessApi:
            settings = settings_for(icefloe_env)
            return stack.enter_context(in_process_api(settings, api_settings, database_url=database_url))

        yield make


@pytest.fixture
def start_server(icefloe_env: dict[str, str], database_url: str, tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """``start_server(with_worker=False, **env)``: a real ``icefloe serve`` on this test's database;
    stopped after it."""
    servers: list[ApiServer] = []

    def start(with_worker: bool = False, **extra_env: str) -> ApiServer:
        env = icefloe_env | extra_env
        server = ApiServer(env=env, log=tmp_path / f"serve-{len(servers)}.log", with_worker=with_worker)
        servers.append(server)
        server.start()
        server.tokens = make_tokens(database_url)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture(scope="module")
def module_server(
    module_env: dict[str, str], module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """A real ``icefloe serve`` (no worker) on a database of this module's own."""
    server = ApiServer(env=module_env, log=tmp_path_factory.mktemp("serve") / "serve.log")
    server.start()
    server.tokens = make_tokens(module_database_url)
    yield server
    assert server.stop() == 0, server.log_text()
