"""Fixtures of the end-to-end tests (the session's services come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from tests.support.tables import default_catalog


@pytest.fixture
def catalog(icefloe_env: dict[str, str]) -> Iterator[SqlCatalog]:
    """The Iceberg catalog icefloe writes to by default, opened the way a user would open it."""
    cat = default_catalog(icefloe_env)
    yield cat
    cat.engine.dispose()
