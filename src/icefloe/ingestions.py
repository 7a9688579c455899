"""Ingestions: define, list, change and delete them. The CLI and the API call these directly."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from icefloe import ledger
from icefloe.discovery import compile_glob
from icefloe.errors import ConfigurationError, ConflictError, NotFoundError
from icefloe.models import ENGINES, FORMATS, LISTINGS, ON_CHANGE, File, Ingestion
from icefloe.s3 import S3Location
from icefloe.scheduler import Schedule
from icefloe.schema import canonical_schema_document, parse_schema_document
from icefloe.tables import split_identifier


@dataclass(frozen=True)
class IngestionSpec:
    """What a user gives to define an ingestion (the CLI's options, the API's body)."""

    name: str
    source: str
    format: str
    table: str
    pattern: str | None = None
    since: dt.datetime | None = None
    schema: dict[str, Any] | None = None
    on_change: str = "replace"
    max_files_per_commit: int = 1000
    max_bytes_per_commit: int = 1 << 30
    max_retries: int = 3
    csv_delimiter: str = ","
    csv_quote_char: str = '"'
    csv_header: bool = True
    # Alert when no run has succeeded for this long (seconds); None: never.
    alert_stale_after_seconds: int | None = None
    # Runs by itself on a cron expression or every N seconds, in schedule_timezone.
    schedule_cron: str | None = None
    schedule_interval_seconds: int | None = None
    schedule_timezone: str = "UTC"
    allow_concurrent_runs: bool = False
    # "arrow" (in-process) or "spark" (Spark Connect; remote from here or ICEFLOE_SPARK_REMOTE).
    engine: str = "arrow"
    spark_remote: str | None = None
    # "full" lists the whole prefix every run; "incremental" lists after the watermark (StartAfter),
    # re-listing the date partitions of the last relist_lookback_seconds, and makes a full
    # reconciling listing every full_listing_every_seconds.
    listing: str = "full"
    relist_lookback_seconds: int | None = None
    full_listing_every_seconds: int = 86400

    def validate(self) -> None:
        """Raise :class:`ConfigurationError` naming the first invalid field."""
        if not self.name or len(self.name) > 200:
            raise ConfigurationError("name must be 1 to 200 characters")
        S3Location.parse(self.source)
        if self.format not in FORMATS:
            raise ConfigurationError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        split_identifier(self.table)
        if self.pattern is not None:
            compile_glob(self.pattern)
        if self.schema is not None:
            parse_schema_document(self.schema)
        if self.on_change not in ON_CHANGE:
            raise ConfigurationError(f"on_change must be replace or append, got {self.on_change!r}")
        for field in ("max_files_per_commit", "max_bytes_per_commit"):
            if getattr(self, field) < 1:
                raise ConfigurationError(f"{field} must be at least 1")
        if self.max_retries < 0:
            raise ConfigurationError("max_retries must be 0 or more")
        if len(self.csv_delimiter) != 1 or len(self.csv_quote_char) != 1:
            raise ConfigurationError("csv delimiter and quote char must be single characters")
        if self.since is not None and self.since.tzinfo is None:
            raise ConfigurationError("since must carry a time zone (e.g. 2025-01-01T00:00:00Z)")
        if self.alert_stale_after_seconds is not None and self.alert_stale_after_seconds < 1:
            raise ConfigurationError("alert_stale_after_seconds must be at least 1")
        Schedule(self.schedule_cron, self.schedule_interval_seconds, self.schedule_timezone).validate()
        if self.engine not in ENGINES:
            raise ConfigurationError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.spark_remote is not None and not self.spark_remote.startswith("sc://"):
            raise ConfigurationError(f"spark_remote must look like sc://host:15002, got {self.spark_remote!r}")
        if self.listing not in LISTINGS:
            raise ConfigurationError(f"listing must be one of {', '.join(LISTINGS)}, got {self.listing!r}")
        if self.relist_lookback_seconds is not None and self.relist_lookback_seconds < 1:
            raise ConfigurationError("relist_lookback_seconds must be at least 1")
        if self.full_listing_every_seconds < 1:
            raise ConfigurationError("full_listing_every_seconds must be at least 1")


def create(db: Engine, spec: IngestionSpec) -> Ingestion:
    spec.validate()
    with Session(db, expire_on_commit=False) as session:
        ingestion = Ingestion(
            name=spec.name,
            source=spec.source,
            format=spec.format,
            table_identifier=spec.table,
            pattern=spec.pattern,
            since=spec.since,
            schema=canonical_schema_document(spec.schema) if spec.schema is not None else None,
            on_change=spec.on_change,
            max_files_per_commit=spec.max_files_per_commit,
            max_bytes_per_commit=spec.max_bytes_per_commit,
            max_retries=spec.max_retries,
            csv_delimiter=spec.csv_delimiter,
            csv_quote_char=spec.csv_quote_char,
            csv_header=spec.csv_header,
            alert_stale_after_seconds=spec.alert_stale_after_seconds,
            schedule_cron=spec.schedule_cron,
            schedule_interval_seconds=spec.schedule_interval_seconds,
            schedule_timezone=spec.schedule_timezone,
            allow_concurrent_runs=spec.allow_concurrent_runs,
            engine=spec.engine,
            spark_remote=spec.spark_remote,
            listing=spec.listing,
            relist_lookback_seconds=spec.relist_lookback_seconds,
            full_listing_every_seconds=spec.full_listing_every_seconds,
        )
        session.add(ingestion)
        try:
            session.commit()
        except IntegrityError as exc:
            raise ConflictError(f"an ingestion named {spec.name!r} already exists") from exc
        session.refresh(ingestion)
        return ingestion


def get(db: Engine, name_or_id: str | int) -> Ingestion:
    with Session(db, expire_on_commit=False) as session:
        stmt = select(Ingestion)
        if isinstance(name_or_id, int):
            stmt = stmt.where(Ingestion.id == name_or_id)
        else:
            stmt = stmt.where(Ingestion.name == name_or_id)
        ingestion = session.scalars(stmt).one_or_none()
        if ingestion is None:
            raise NotFoundError(f"no ingestion named {name_or_id!r}")
        return ingestion


def list_all(db: Engine) -> list[Ingestion]:
    with Session(db, expire_on_commit=False) as session:
        return list(session.scalars(select(Ingestion).order_by(Ingestion.name)))


def set_status(db: Engine, name: str, status: str) -> Ingestion:
    with Session(db, expire_on_commit=False) as session:
        ingestion = session.scalars(select(Ingestion).where(Ingestion.name == name)).one_or_none()
        if ingestion is None:
            raise NotFoundError(f"no ingestion named {name!r}")
        ingestion.status = status
        ingestion.updated_at = func.now()
        session.commit()
        session.refresh(ingestion)
        return ingestion


def delete(db: Engine, name: str) -> None:
    """Delete the ingestion and its ledger (runs, files). The Iceberg table is kept.

    Refused while a worker holds a live lease on one of its files: deleting the ledger under a
    worker would lose the record of what it is about to commit.
    """
    with Session(db) as session:
        ingestion = session.scalars(select(Ingestion).where(Ingestion.name == name)).one_or_none()
        if ingestion is None:
            raise NotFoundError(f"no ingestion named {name!r}")
        busy = session.scalar(
            select(func.count())
            .select_from(File)
            .where(
                File.ingestion_id == ingestion.id,
                File.status == "PROCESSING",
                File.lease_expires_at > func.now(),
            )
        )
        if busy:
            raise ConflictError(f"ingestion {name!r} is being processed ({busy} file(s) leased); try later")
        session.delete(ingestion)
        session.commit()


# ----------------------------------------------------------------------------- API additions

# Options an existing ingestion may change. ``source``, ``format`` and ``table`` may not: the ledger
# records what was read from that source into that table; define a new ingestion instead.
UPDATABLE = (
    "name",
    "alert_stale_after_seconds",
    "schedule_cron",
    "schedule_interval_seconds",
    "schedule_timezone",
    "allow_concurrent_runs",
    "pattern",
    "since",
    "schema",
    "on_change",
    "max_files_per_commit",
    "max_bytes_per_commit",
    "max_retries",
    "csv_delimiter",
    "csv_quote_char",
    "csv_header",
    "engine",
    "spark_remote",
    "listing",
    "relist_lookback_seconds",
    "full_listing_every_seconds",
)

# Changing these changes which keys belong to the ingestion: keys below the listing watermark may
# newly match, so the watermark is forgotten and the next run lists everything.
_RESETS_LISTING = ("pattern", "since")


def spec_of(ingestion: Ingestion) -> IngestionSpec:
    """The spec an ingestion was defined with (as changed since)."""
    return IngestionSpec(
        name=ingestion.name,
        source=ingestion.source,
        format=ingestion.format,
        table=ingestion.table_identifier,
        pattern=ingestion.pattern,
        since=ingestion.since,
        schema=ingestion.schema,
        on_change=ingestion.on_change,
        max_files_per_commit=ingestion.max_files_per_commit,
        max_bytes_per_commit=ingestion.max_bytes_per_commit,
        max_retries=ingestion.max_retries,
        csv_delimiter=ingestion.csv_delimiter,
        csv_quote_char=ingestion.csv_quote_char,
        csv_header=ingestion.csv_header,
        alert_stale_after_seconds=ingestion.alert_stale_after_seconds,
        schedule_cron=ingestion.schedule_cron,
        schedule_interval_seconds=ingestion.schedule_interval_seconds,
        schedule_timezone=ingestion.schedule_timezone,
        allow_concurrent_runs=ingestion.allow_concurrent_runs,
        engine=ingestion.engine,
        spark_remote=ingestion.spark_remote,
        listing=ingestion.listing,
        relist_lookback_seconds=ingestion.relist_lookback_seconds,
        full_listing_every_seconds=ingestion.full_listing_every_seconds,
    )


def update(db: Engine, name_or_id: str | int, changes: Mapping[str, Any]) -> Ingestion:
    """Change some options of an ingestion (`PATCH /api/v1/ingestions/{id}`), checked as :func:`create`
    checks a new one. The row is locked while it changes, so concurrent updates apply one after the other.
    """
    fixed = sorted(set(changes) - set(UPDATABLE))
    if fixed:
        raise ConfigurationError(
            f"cannot change {', '.join(fixed)} of an ingestion (changeable: {', '.join(UPDATABLE)})"
        )
    with Session(db, expire_on_commit=False) as session:
        column = Ingestion.id if isinstance(name_or_id, int) else Ingestion.name
        ingestion = session.scalars(select(Ingestion).where(column == name_or_id).with_for_update()).one_or_none()
        if ingestion is None:
            raise NotFoundError(f"no ingestion named {name_or_id!r}")
        replace(spec_of(ingestion), **changes).validate()
        for field, value in changes.items():
            if field == "schema" and value is not None:
                value = canonical_schema_document(value)
            setattr(ingestion, field, value)
        ingestion.updated_at = func.now()
        if any(field in changes for field in _RESETS_LISTING):
            ledger.reset_listing_state(session.connection(), ingestion.id)
        try:
            session.commit()
        except IntegrityError as exc:
            raise ConflictError(f"an ingestion named {changes.get('name')!r} already exists") from exc
        session.refresh(ingestion)
        return ingestion


def search(
    db: Engine,
    *,
    status: str | None = None,
    format: str | None = None,
    name_prefix: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[Ingestion]:
    """Ingestions in id order after ``after_id`` (keyset pagination), optionally filtered."""
    stmt = select(Ingestion).order_by(Ingestion.id).limit(limit)
    if status is not None:
        stmt = stmt.where(Ingestion.status == status)
    if format is not None:
        stmt = stmt.where(Ingestion.format == format)
    if name_prefix:
        stmt = stmt.where(func.starts_with(Ingestion.name, name_prefix))
    if after_id is not None:
        stmt = stmt.where(Ingestion.id > after_id)
    with Session(db, expire_on_commit=False) as session:
        return list(session.scalars(stmt))


def file_uri(ingestion: Ingestion, key_or_uri: str) -> str:
    """A file's ledger path (``s3://bucket/key``) from a key of the ingestion's bucket or a full URI."""
    if key_or_uri.startswith("s3://"):
        return key_or_uri
    return S3Location.parse(ingestion.source).uri(key_or_uri)


def as_dict(i: Ingestion) -> dict[str, Any]:
    """An ingestion as the CLI's --json and the API show it: the CLI's option names in snake_case."""
    return {
        "id": i.id,
        "name": i.name,
        "source": i.source,
        "format": i.format,
        "table": i.table_identifier,
        "pattern": i.pattern,
        "since": i.since,
        "schema": i.schema,
        "on_change": i.on_change,
        "max_files_per_commit": i.max_files_per_commit,
        "max_bytes_per_commit": i.max_bytes_per_commit,
        "max_retries": i.max_retries,
        "csv_delimiter": i.csv_delimiter,
        "csv_quote_char": i.csv_quote_char,
        "csv_header": i.csv_header,
        "schedule_cron": i.schedule_cron,
        "schedule_interval_seconds": i.schedule_interval_seconds,
        "schedule_timezone": i.schedule_timezone,
        "allow_concurrent_runs": i.allow_concurrent_runs,
        "alert_stale_after_seconds": i.alert_stale_after_seconds,
        "engine": i.engine,
        "spark_remote": i.spark_remote,
        "listing": i.listing,
        "relist_lookback_seconds": i.relist_lookback_seconds,
        "full_listing_every_seconds": i.full_listing_every_seconds,
        "status": i.status,
        "created_at": i.created_at,
        "updated_at": i.updated_at,
    }
