"""The ledger's tables (SQLAlchemy 2). Alembic migrations in ``icefloe/migrations`` create them.

Status values are plain text with CHECK constraints: readable in psql, cheap to extend.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Every enumeration of the ledger, defined once: the types are the API's (pydantic), the tuples
# the ledger's CHECK constraints and the CLI's validation.
FileStatus = Literal["DISCOVERED", "PROCESSING", "SUCCESS", "FAILED", "SKIPPED", "HELD"]
RunStatus = Literal["PENDING", "RUNNING", "SUCCESS", "PARTIAL", "FAILED", "CANCELLED"]
IngestionStatus = Literal["ACTIVE", "PAUSED"]
Format = Literal["csv", "jsonl", "json", "parquet"]
OnChange = Literal["replace", "append"]
EngineName = Literal["arrow", "spark"]
Role = Literal["reader", "operator", "admin"]
Listing = Literal["full", "incremental"]
# What a file whose schema differs from the table's does (README, "Schema evolution").
SchemaEvolution = Literal["add-columns", "approve", "rescue", "fail"]
SchemaChangeStatus = Literal["PENDING", "APPROVED", "REJECTED", "APPLIED", "CREATED"]
FILE_STATUSES: tuple[str, ...] = get_args(FileStatus)
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
INGESTION_STATUSES: tuple[str, ...] = get_args(IngestionStatus)
FORMATS: tuple[str, ...] = get_args(Format)
ON_CHANGE: tuple[str, ...] = get_args(OnChange)
ENGINES: tuple[str, ...] = get_args(EngineName)
LISTINGS: tuple[str, ...] = get_args(Listing)
SCHEMA_EVOLUTIONS: tuple[str, ...] = get_args(SchemaEvolution)
SCHEMA_CHANGE_STATUSES: tuple[str, ...] = get_args(SchemaChangeStatus)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    pass


class Ingestion(Base):
    """What to ingest from where into which table, and how."""

    __tablename__ = "ingestions"
    __table_args__ = (
        CheckConstraint(_in("status", INGESTION_STATUSES), name="ck_ingestions_status"),
        CheckConstraint(_in("format", FORMATS), name="ck_ingestions_format"),
        CheckConstraint(_in("on_change", ON_CHANGE), name="ck_ingestions_on_change"),
        CheckConstraint(_in("engine", ENGINES), name="ck_ingestions_engine"),
        CheckConstraint(_in("listing", LISTINGS), name="ck_ingestions_listing"),
        CheckConstraint(_in("schema_evolution", SCHEMA_EVOLUTIONS), name="ck_ingestions_schema_evolution"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(20))
    table_identifier: Mapped[str] = mapped_column(Text)
    pattern: Mapped[str | None] = mapped_column(Text)
    since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    schema: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    on_change: Mapped[str] = mapped_column(String(20), server_default="replace")
    max_files_per_commit: Mapped[int] = mapped_column(Integer, server_default="1000")
    max_bytes_per_commit: Mapped[int] = mapped_column(BigInteger, server_default=str(1 << 30))
    max_retries: Mapped[int] = mapped_column(Integer, server_default="3")
    csv_delimiter: Mapped[str] = mapped_column(String(1), server_default=",")
    csv_quote_char: Mapped[str] = mapped_column(String(1), server_default='"')
    csv_header: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # Field texts read as NULL (JSON list of strings); None: only an empty unquoted field.
    csv_null_values: Mapped[list[str] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), server_default="ACTIVE")
    # Engine that reads and writes batches: "arrow" (in-process) or "spark" (Spark Connect).
    engine: Mapped[str] = mapped_column(String(20), server_default="arrow")
    spark_remote: Mapped[str | None] = mapped_column(Text)
    # Schedule: a cron expression or an interval, evaluated in schedule_timezone.
    schedule_cron: Mapped[str | None] = mapped_column(Text)
    schedule_interval_seconds: Mapped[int | None] = mapped_column(Integer)
    schedule_timezone: Mapped[str] = mapped_column(Text, server_default="UTC")
    # Alert when no run has succeeded for this long (seconds); None: no staleness alert.
    alert_stale_after_seconds: Mapped[int | None] = mapped_column(Integer)
    # `icefloe maintain` of the table by any one worker every N seconds; None: only by hand.
    maintain_every_seconds: Mapped[int | None] = mapped_column(Integer)
    # When a worker next maintains the table (taken FOR UPDATE SKIP LOCKED); None: created_at + every.
    maintenance_due_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Start a scheduled run even when another run of this ingestion is in progress.
    allow_concurrent_runs: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # "full": every run lists the whole prefix; "incremental": from the watermark (S3 StartAfter),
    # re-listing the date partitions of the last relist_lookback_seconds, with a full reconciling
    # listing every full_listing_every_seconds.
    listing: Mapped[str] = mapped_column(String(20), server_default="full")
    relist_lookback_seconds: Mapped[int | None] = mapped_column(Integer)
    full_listing_every_seconds: Mapped[int] = mapped_column(Integer, server_default="86400")
    # add-columns | approve | rescue | fail: see icefloe.schema_changes.
    schema_evolution: Mapped[str] = mapped_column(String(20), server_default="add-columns")
    # strptime-style formats of timestamps and dates in CSV/JSON text (JSON lists); None: ISO-8601 only.
    timestamp_formats: Mapped[list[str] | None] = mapped_column(JSONB)
    date_formats: Mapped[list[str] | None] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Run(Base):
    """One execution of an ingestion, with its counters."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="ck_runs_status"),
        Index("ix_runs_ingestion_started", "ingestion_id", "id"),
        UniqueConstraint("ingestion_id", "scheduled_for", name="uq_runs_ingestion_scheduled_for"),
        # Workers pick queued runs.
        Index("ix_runs_pending", "id", postgresql_where=text("status = 'PENDING'")),
        # The dashboard's last-24-hours charts: the runs of one ingestion that finished since a time.
        Index("ix_runs_ingestion_finished", "ingestion_id", "finished_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ingestion_id: Mapped[int] = mapped_column(ForeignKey("ingestions.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(20), server_default="cli")
    # The fire time a scheduled run stands for; unique per ingestion, so N schedulers make one run.
    scheduled_for: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Refreshed by the worker executing the run; a RUNNING run whose heartbeat is older than a
    # lease belongs to a dead worker and is taken over by another.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), server_default="PENDING")
    worker_id: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    # Set by a cancel of a RUNNING run (`POST /runs/{id}/cancel`); the worker executing the run
    # checks it between batches and ends the run CANCELLED. A PENDING run is CANCELLED at once.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    files_discovered: Mapped[int] = mapped_column(Integer, server_default="0")
    files_new: Mapped[int] = mapped_column(Integer, server_default="0")
    files_changed: Mapped[int] = mapped_column(Integer, server_default="0")
    files_succeeded: Mapped[int] = mapped_column(Integer, server_default="0")
    files_failed: Mapped[int] = mapped_column(Integer, server_default="0")
    files_skipped: Mapped[int] = mapped_column(Integer, server_default="0")
    records_ingested: Mapped[int] = mapped_column(BigInteger, server_default="0")
    bytes_read: Mapped[int] = mapped_column(BigInteger, server_default="0")
    snapshots_committed: Mapped[int] = mapped_column(Integer, server_default="0")
    # How discovery listed: "full" or "incremental"; set to "full" when a full listing is requested
    # (`icefloe run --full-listing`), else NULL until discovery decides.
    listing: Mapped[str | None] = mapped_column(String(20))
    list_requests: Mapped[int] = mapped_column(Integer, server_default="0")
    # New or changed files a full listing found below the point the incremental listing starts at.
    files_missed_by_incremental: Mapped[int] = mapped_column(Integer, server_default="0")


class File(Base):
    """One object key of an ingestion and the fate of its current version.

    A changed ETag starts a new ``version`` of the same row. ``batch_ids`` keeps every batch that
    ever held this version (until it is SUCCESS): the snapshot search of the commit protocol looks
    for any of them in the table's snapshot summaries.
    """

    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("ingestion_id", "file_path", name="uq_files_ingestion_path"),
        CheckConstraint(_in("status", FILE_STATUSES), name="ck_files_status"),
        # The claim query: claimable rows of one ingestion in id order.
        Index(
            "ix_files_claimable",
            "ingestion_id",
            "id",
            postgresql_where=text("status IN ('DISCOVERED', 'FAILED')"),
        ),
        # Reconciliation of expired leases.
        Index(
            "ix_files_processing_lease",
            "ingestion_id",
            "lease_expires_at",
            postgresql_where=text("status = 'PROCESSING'"),
        ),
        # Heartbeats and commits address a batch.
        Index("ix_files_batch", "batch_id", postgresql_where=text("status = 'PROCESSING'")),
        # `icefloe files NAME --status S`.
        Index("ix_files_ingestion_status", "ingestion_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ingestion_id: Mapped[int] = mapped_column(ForeignKey("ingestions.id", ondelete="CASCADE"))
    file_path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    modified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    etag: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    status: Mapped[str] = mapped_column(String(20), server_default="DISCOVERED")
    discovered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    records_ingested: Mapped[int | None] = mapped_column(BigInteger)
    bytes_read: Mapped[int | None] = mapped_column(BigInteger)
    processing_duration_ms: Mapped[int | None] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The worker holding the lease — or, once the attempt ended, the one that made it.
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    lease_token: Mapped[int] = mapped_column(BigInteger, server_default="0")
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    batch_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)), server_default=text("'{}'::uuid[]"))
    first_claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    snapshot_id: Mapped[int | None] = mapped_column(BigInteger)
    # HELD: the pending schema change this file waits for (--schema-evolution approve).
    schema_change_id: Mapped[int | None] = mapped_column(
        ForeignKey("schema_changes.id", ondelete="SET NULL", name="fk_files_schema_change")
    )


class SchemaChange(Base):
    """One change of a table's schema icefloe made or was asked to make, for one ingestion.

    PENDING (files HELD for it, ``--schema-evolution approve``) → APPROVED (applied by an approval,
    ``decided_by`` the token name or ``cli``) or REJECTED; APPLIED: made by add-columns in the commit
    of the rows that needed it; CREATED: the table's first schema. ``schema_id`` is the Iceberg
    schema id the change produced. Files with the same change (``fingerprint``) share one PENDING row.
    """

    __tablename__ = "schema_changes"
    __table_args__ = (
        CheckConstraint(_in("status", SCHEMA_CHANGE_STATUSES), name="ck_schema_changes_status"),
        Index(
            "uq_schema_changes_pending",
            "ingestion_id",
            "fingerprint",
            unique=True,
            postgresql_where=text("status = 'PENDING'"),
        ),
        Index("ix_schema_changes_ingestion", "ingestion_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ingestion_id: Mapped[int] = mapped_column(ForeignKey("ingestions.id", ondelete="CASCADE"))
    table_identifier: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(Text)
    change: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20))
    first_file: Mapped[str | None] = mapped_column(Text)
    detected_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(Text)
    schema_id: Mapped[int | None] = mapped_column(Integer)


Index("ix_files_held", File.schema_change_id, postgresql_where=text("status = 'HELD'"))


class ListingWatermark(Base):
    """Where the incremental listing of one listing root (``s3://bucket/prefix``) resumes.

    ``watermark`` is the greatest key listed *and recorded* (advanced in the transaction that upserts
    its page, never moved back); ``last_full_listing_at`` is when a full listing of the root last
    completed.
    """

    __tablename__ = "listing_watermarks"

    ingestion_id: Mapped[int] = mapped_column(ForeignKey("ingestions.id", ondelete="CASCADE"), primary_key=True)
    root: Mapped[str] = mapped_column(Text, primary_key=True)
    watermark: Mapped[str | None] = mapped_column(Text)
    last_full_listing_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FileAttempt(Base):
    """One attempt at one file version: the history `icefloe files --history` shows."""

    __tablename__ = "file_attempts"
    __table_args__ = (Index("ix_file_attempts_file", "file_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    worker_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    error_type: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Alert(Base):
    """One incident worth telling a human about; ``incident_key`` makes it one alert, not one per file."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_unsent", "id", postgresql_where=text("sent_at IS NULL")),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_key: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    ingestion_id: Mapped[int | None] = mapped_column(ForeignKey("ingestions.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)


# Keyset pagination of one ingestion's ledger (`GET /ingestions/{id}/files`): id order within it.
Index("ix_files_ingestion_id", File.ingestion_id, File.id)

TOKEN_ROLES: tuple[str, ...] = get_args(Role)  # ordered: each role includes the ones before it


class ApiToken(Base):
    """A bearer token of the REST API. Only the SHA-256 of the secret is stored; the secret is
    shown once, when the token is created. A revoked token stays listed (with ``revoked_at``)."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint(_in("role", TOKEN_ROLES), name="ck_api_tokens_role"),
        # One live token per name; revoked ones keep their name in the history.
        Index("uq_api_tokens_live_name", "name", unique=True, postgresql_where=text("revoked_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Refreshed at most once a minute, so that busy clients don't write on every request.
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class DashboardSession(Base):
    """A signed-in browser of the dashboard: the cookie holds a random secret whose SHA-256 is
    ``id_hash``; ``csrf`` is the token every form of this session must send back. A session ends at
    ``expires_at``, at sign-out, or when its API token is revoked (checked on every request)."""

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
