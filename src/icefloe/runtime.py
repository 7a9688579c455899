"""The services one icefloe process talks to, opened from :class:`Settings`.

:meth:`Runtime.open` is the one explicit step that starts the embedded PostgreSQL (when no
``database_url`` is set) and migrates the ledger; commands that need no database never call it.
The catalog and the S3 clients are built on first use (no service is started for them): pyiceberg
takes seconds to import and only the commands that ingest need it.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from icefloe import ledger, migrations
from icefloe.errors import ConfigurationError
from icefloe.settings import Settings
from icefloe.stores import Location, Store, open_store

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from icefloe.s3 import ObjectReader

log = logging.getLogger(__name__)


class Runtime:
    """Holds the ledger engine, the catalog and the S3 clients of this process."""

    def __init__(self, settings: Settings, database_url: str, db: Engine) -> None:
        self.settings = settings
        self.database_url = database_url
        self.db = db
        self._stores: dict[tuple[str, str | None], Store] = {}

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Runtime:
        """Connect to the ledger — starting the embedded PostgreSQL under ``settings.home`` when
        ``settings.database_url`` is None — and apply pending migrations (``migrate``)."""
        url = settings.database_url
        if not url:
            from icefloe import embedded

            log.info("starting the embedded PostgreSQL under %s", settings.home)
            url = embedded.ensure_postgres(settings.home)
        if migrate:
            try:
                migrations.upgrade(url)
            except OperationalError as exc:
                raise ConfigurationError(f"cannot connect to the ledger database: {exc.orig}") from exc
        return cls(settings, url, ledger.connect(url))

    @cached_property
    def catalog(self) -> Catalog:
        # pyiceberg, pyarrow and boto3 load with the first use: commands that only read the
        # ledger start ~0.5 s sooner.
        from icefloe import tables

        return tables.load(self.settings, self.database_url)

    @cached_property
    def s3(self) -> Any:
        from icefloe.s3 import make_client

        return make_client(self.settings.s3, max_pool_connections=max(10, self.settings.read_threads * 2))

    @cached_property
    def objects(self) -> ObjectReader:
        from icefloe.s3 import ObjectReader

        return ObjectReader(self.s3, self.settings.s3)

    def store(self, location: Location) -> Store:
        """The store of a source's bucket or container, built once per process (S3: :attr:`objects`)."""
        if location.scheme == "s3":
            return self.objects
        key = (location.base, location.account)
        if key not in self._stores:
            self._stores[key] = open_store(
                location, self.settings, max_connections=max(10, self.settings.read_threads * 2)
            )
        return self._stores[key]

    def close(self) -> None:
        for store in self._stores.values():
            closer = getattr(store, "close", None)
            if closer is not None:
                closer()
        self.db.dispose()
        # A SQL catalog holds a pool of its own (in the ledger database, by default).
        catalog_engine = getattr(self.__dict__.get("catalog"), "engine", None)
        if isinstance(catalog_engine, Engine):
            catalog_engine.dispose()
