"""Fixtures of the dashboard tests.

In this process (``dashboard``: the app through ``TestClient``, for sign-in, CSRF and roles, fast),
and in a real browser (tests marked ``browser``): Debian's chromium driven by Playwright against a
real ``icefloe serve --with-worker`` on the test's PostgreSQL database and SeaweedFS bucket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from icefloe import embedded
from icefloe.settings import Settings
from tests.support.api import ApiServer, in_process_api, make_tokens
from tests.support.browser import Browser, launch
from tests.support.dashboard import Dashboard
from tests.support.services import clone_database, drop_database, service_env


@pytest.fixture
def dashboard(icefloe_env: dict[str, str], database_url: str) -> Iterator[Dashboard]:
    """The dashboard in this process, on this test's own database."""
    with in_process_api(Settings.from_env(icefloe_env), database_url=database_url) as api:
        yield Dashboard(api)


@pytest.fixture(scope="module")
def module_dashboard(
    pg_url: str,
    pg_admin: sa.Engine,
    template_database: str,
    s3: embedded.SeaweedS3,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Dashboard]:
    """The dashboard in this process on a database of the module's own (for the role matrix:
    one app for all its cases, not one per case)."""
    url = clone_database(pg_admin, pg_url, template_database, prefix="test_dashboard")
    try:
        env = service_env(url, s3, tmp_path_factory.mktemp("dashboard"))
        with in_process_api(Settings.from_env(env), database_url=url) as api:
            yield Dashboard(api)
    finally:
        drop_database(pg_admin, url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium (``/usr/bin/chromium``), headless, one per module (closed after it: the
    Playwright driver's event loop does not outlive the browser tests)."""
    with launch() as b:
        yield b


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    """Where a test saves its screenshots: test-output/screenshots/<test name>/ (git-ignored)."""
    return Path(request.config.rootpath) / "test-output" / "screenshots" / request.node.name


@pytest.fixture
def open_pages(browser: Browser, shots: Path) -> Iterator[Callable[..., Any]]:
    """``open_pages(base_url, width=1280)``: a fresh browser context (cookies of its own) whose
    pages record console errors; the test fails if any page logged one."""
    with ExitStack() as stack:
        contexts: list[Any] = []

        def make(base_url: str, width: int = 1280, height: int = 900) -> Any:
            ctx = stack.enter_context(browser.context(base_url, width=width, height=height, shots=shots))
            contexts.append(ctx)
            return ctx

        yield make
        errors = [e for ctx in contexts for e in ctx.console_errors]
        assert errors == [], errors


@pytest.fixture
def served(icefloe_env: dict[str, str], database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    """A real ``icefloe serve --with-worker`` on this test's database and S3, with a token per role."""
    server = ApiServer(env=icefloe_env, log=tmp_path / "serve.log", with_worker=True)
    server.start()
    try:
        server.tokens = make_tokens(database_url)
        yield server
    finally:
        assert server.stop() == 0, server.log_text()
