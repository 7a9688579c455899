"""The services one icefloe process talks to, built lazily from :class:`Settings`.

Built once in ``main()`` (or by a test) and passed down; nothing is created at import time.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from icefloe import ledger, migrations, tables
from icefloe.errors import ConfigurationError
from icefloe.s3 import ObjectReader, make_client
from icefloe.settings import Settings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

log = logging.getLogger(__name__)


class Runtime:
    """Holds the ledger engine, the catalog and the S3 client of this process."""

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self._migrate = migrate

    @cached_property
    def database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        from icefloe import embedded

        log.info("starting the embedded PostgreSQL under %s", self.settings.home)
        return embedded.ensure_postgres(self.settings.home)

    @cached_property
    def db(self) -> Engine:
        """The ledger; pending migrations are applied on first use."""
        engine = ledger.connect(self.database_url)
        if self._migrate:
            try:
                migrations.upgrade(self.database_url)
            except OperationalError as exc:
                raise ConfigurationError(f"cannot connect to the ledger database: {exc.orig}") from exc
        return engine

    @cached_property
    def catalog(self) -> Catalog:
        return tables.load(self.settings, self.database_url)

    @cached_property
    def s3(self) -> Any:
        return make_client(max_pool_connections=max(10, self.settings.read_threads * 2))

    @cached_property
    def objects(self) -> ObjectReader:
        return ObjectReader(self.s3, max_connections=max(10, self.settings.read_threads * 2))

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()
