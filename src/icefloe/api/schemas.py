"""Request and response bodies of the REST API (pydantic), with the examples the OpenAPI shows.

Field names follow DESIGN.md's public contract: an ingestion uses the CLI's option names in
snake_case; a run has the fields of ``icefloe run --json`` plus ``id``, ``trigger`` and times; a
file has the ledger's columns.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_serializer,
    model_validator,
)

from icefloe import ingestions, runs
from icefloe.models import (
    ApiToken,
    EngineName,
    FileStatus,
    Format,
    Ingestion,
    IngestionStatus,
    Listing,
    OnChange,
    Role,
    Run,
    RunStatus,
    SchemaEvolution,
)
from icefloe.redaction import redact_optional, redact_uri

# The enumerations are the ledger's own (icefloe.models), not copies.

INT32 = 2**31 - 1
INT64 = 2**63 - 1
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f/]+$")]
Char = Annotated[str, Field(min_length=1, max_length=1, pattern=r"^[^\x00]$")]


_INGESTION_EXAMPLE: dict[str, Any] = {
    "name": "orders",
    "source": "s3://landing/orders/",
    "format": "jsonl",
    "table": "sales.orders",
    "pattern": "**/*.jsonl",
    "since": "2025-01-01T00:00:00Z",
    "schema": {"order_id": "long", "amount": "decimal(12,2)", "ts": "timestamptz"},
    "on_change": "replace",
    "max_files_per_commit": 1000,
    "max_bytes_per_commit": 1073741824,
    "max_retries": 3,
    "schedule_cron": "*/15 * * * *",
    "alert_stale_after_seconds": 7200,
}


class IngestionCreate(BaseModel):
    """An ingestion to define: the options of ``icefloe ingestion create``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_INGESTION_EXAMPLE]})

    name: Name
    source: str = Field(max_length=2000, description="s3://bucket/prefix/")
    format: Format
    table: str = Field(max_length=1000, description="namespace.table")
    pattern: str | None = Field(default=None, max_length=2000, description="glob below the prefix")
    since: AwareDatetime | None = Field(default=None, description="only objects modified at/after")
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="Iceberg JSON schema or {column: type}"
    )
    on_change: OnChange = "replace"
    max_files_per_commit: int = Field(default=1000, ge=1, le=INT32)
    max_bytes_per_commit: int = Field(default=1 << 30, ge=1, le=INT64)
    max_retries: int = Field(default=3, ge=0, le=INT32)
    csv_delimiter: Char = ","
    csv_quote_char: Char = '"'
    csv_header: bool = True
    csv_null_values: list[Annotated[str, Field(max_length=100)]] | None = Field(
        default=None, max_length=100, description="CSV field texts read as NULL; null: only an empty unquoted field"
    )
    schedule_cron: str | None = Field(
        default=None, max_length=200, description='run on this cron expression, e.g. "*/5 * * * *"'
    )
    schedule_interval_seconds: int | None = Field(default=None, ge=1, le=INT32, description="or every N seconds")
    schedule_timezone: str = Field(default="UTC", min_length=1, max_length=100, description="of the cron schedule")
    allow_concurrent_runs: bool = False
    alert_stale_after_seconds: int | None = Field(
        default=None, ge=1, le=INT32, description="alert when no run succeeded for this long"
    )
    maintain_every_seconds: int | None = Field(
        default=None, ge=60, le=INT32, description="a worker compacts and expires the table this often"
    )
    engine: EngineName = "arrow"
    spark_remote: str | None = Field(
        default=None,
        max_length=2000,
        description="Spark Connect URL (engine spark); its token is never returned",
    )
    listing: Listing = Field(
        default="full", description="full: list the whole prefix every run; incremental: after the watermark"
    )
    relist_lookback_seconds: int | None = Field(
        default=None, ge=1, le=INT32, description="incremental: re-list the date partitions this far back"
    )
    full_listing_every_seconds: int = Field(
        default=86400, ge=1, le=INT32, description="incremental: a full reconciling listing this often"
    )
    timestamp_formats: list[Annotated[str, Field(max_length=100)]] | None = Field(
        default=None,
        max_length=20,
        description="strptime-style timestamp formats of CSV/JSON text, e.g. %d/%m/%Y %H:%M",
    )
    date_formats: list[Annotated[str, Field(max_length=100)]] | None = Field(
        default=None, max_length=20, description="strptime-style date formats of CSV/JSON text, e.g. %d/%m/%Y"
    )
    schema_evolution: SchemaEvolution = Field(
        default="add-columns",
        description="a file whose schema differs from the table's: add-columns (and safe widenings), "
        "approve (HELD until approved), rescue (into _rescued_data), fail",
    )


def _not_null(schema: dict[str, Any]) -> Any:
    """The documented schema of an optional PATCH field that may be left out but not set to null."""
    return WithJsonSchema(schema)


class IngestionUpdate(BaseModel):
    """Options to change; fields left out keep their value. ``pattern``, ``since`` and ``schema``
    may be set to null to clear them. ``source``, ``format`` and ``table`` cannot change."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"max_files_per_commit": 500, "pattern": None}]}
    )

    name: Annotated[
        str | None,
        Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f/]+$"),
        _not_null({"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[^\x00-\x1f/]+$"}),
    ] = None
    pattern: str | None = Field(default=None, max_length=2000)
    since: AwareDatetime | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    on_change: Annotated[OnChange | None, _not_null({"enum": list(get_args(OnChange)), "type": "string"})] = None
    max_files_per_commit: Annotated[
        int | None, Field(ge=1, le=INT32), _not_null({"type": "integer", "minimum": 1, "maximum": INT32})
    ] = None
    max_bytes_per_commit: Annotated[
        int | None, Field(ge=1, le=INT64), _not_null({"type": "integer", "minimum": 1, "maximum": INT64})
    ] = None
    max_retries: Annotated[
        int | None, Field(ge=0, le=INT32), _not_null({"type": "integer", "minimum": 0, "maximum": INT32})
    ] = None
    csv_delimiter: Annotated[
        str | None,
        Field(min_length=1, max_length=1),
        _not_null({"type": "string", "minLength": 1, "maxLength": 1}),
    ] = None
    csv_quote_char: Annotated[
        str | None,
        Field(min_length=1, max_length=1),
        _not_null({"type": "string", "minLength": 1, "maxLength": 1}),
    ] = None
    csv_header: Annotated[bool | None, _not_null({"type": "boolean"})] = None
    csv_null_values: list[Annotated[str, Field(max_length=100)]] | None = Field(default=None, max_length=100)
    schedule_cron: str | None = Field(default=None, max_length=200)
    schedule_interval_seconds: int | None = Field(default=None, ge=1, le=INT32)
    schedule_timezone: Annotated[
        str | None,
        Field(min_length=1, max_length=100),
        _not_null({"type": "string", "minLength": 1, "maxLength": 100}),
    ] = None
    allow_concurrent_runs: Annotated[bool | None, _not_null({"type": "boolean"})] = None
    engine: Annotated[EngineName | None, _not_null({"enum": list(get_args(EngineName)), "type": "string"})] = None
    spark_remote: str | None = Field(default=None, max_length=2000)
    alert_stale_after_seconds: int | None = Field(default=None, ge=1, le=INT32)
    maintain_every_seconds: int | None = Field(default=None, ge=60, le=INT32)
    listing: Annotated[Listing | None, _not_null({"enum": list(get_args(Listing)), "type": "string"})] = None
    relist_lookback_seconds: int | None = Field(default=None, ge=1, le=INT32)
    full_listing_every_seconds: Annotated[
        int | None, Field(ge=1, le=INT32), _not_null({"type": "integer", "minimum": 1, "maximum": INT32})
    ] = None
    schema_evolution: Annotated[
        SchemaEvolution | None, _not_null({"enum": list(get_args(SchemaEvolution)), "type": "string"})
    ] = None
    timestamp_formats: list[Annotated[str, Field(max_length=100)]] | None = Field(default=None, max_length=20)
    date_formats: list[Annotated[str, Field(max_length=100)]] | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _nulls_only_where_clearable(self) -> Self:
        clearable = {
            "pattern",
            "since",
            "schema_",
            "schedule_cron",
            "schedule_interval_seconds",
            "spark_remote",
            "alert_stale_after_seconds",
            "maintain_every_seconds",
            "csv_null_values",
            "relist_lookback_seconds",
            "timestamp_formats",
            "date_formats",
        }
        for field in self.model_fields_set - clearable:
            if getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the request sets, by their ingestion option names."""
        data = self.model_dump(exclude_unset=True)
        if "schema_" in data:
            data["schema"] = data.pop("schema_")
        return data


class IngestionOut(BaseModel):
    """An ingestion as defined (the JSON of ``icefloe ingestion show --json``, less its counts)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    **_INGESTION_EXAMPLE,
                    "csv_delimiter": ",",
                    "csv_quote_char": '"',
                    "csv_header": True,
                    "csv_null_values": None,
                    "schedule_cron": "*/15 * * * *",
                    "schedule_interval_seconds": None,
                    "schedule_timezone": "UTC",
                    "allow_concurrent_runs": False,
                    "alert_stale_after_seconds": 7200,
                    "engine": "arrow",
                    "spark_remote": None,
                    "listing": "incremental",
                    "relist_lookback_seconds": 172800,
                    "full_listing_every_seconds": 86400,
                    "schema_evolution": "add-columns",
                    "timestamp_formats": None,
                    "date_formats": None,
                    "status": "ACTIVE",
                    "created_at": "2025-01-02T03:04:05Z",
                    "updated_at": "2025-01-02T03:04:05Z",
                }
            ]
        }
    )

    id: int
    name: str
    source: str
    format: str
    table: str
    pattern: str | None
    since: dt.datetime | None
    schema_: dict[str, Any] | None = Field(alias="schema", serialization_alias="schema")
    on_change: str
    max_files_per_commit: int
    max_bytes_per_commit: int
    max_retries: int
    csv_delimiter: str
    csv_quote_char: str
    csv_header: bool
    csv_null_values: list[str] | None
    schedule_cron: str | None
    schedule_interval_seconds: int | None
    schedule_timezone: str
    allow_concurrent_runs: bool
    alert_stale_after_seconds: int | None
    maintain_every_seconds: int | None
    engine: str
    spark_remote: str | None
    listing: str
    relist_lookback_seconds: int | None
    full_listing_every_seconds: int
    schema_evolution: str
    timestamp_formats: list[str] | None
    date_formats: list[str] | None
    status: IngestionStatus
    created_at: dt.datetime
    updated_at: dt.datetime

    @field_serializer("source", "spark_remote")
    def _no_credentials(self, uri: str | None) -> str | None:
        return redact_uri(uri) if uri is not None else None

    @classmethod
    def of(cls, i: Ingestion) -> Self:
        return cls.model_validate(ingestions.as_dict(i))


class RunOut(BaseModel):
    """A run: the fields of ``icefloe run --json``, plus its id, trigger and times. The counters
    are live while the run is RUNNING."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "run_id": 42,
                    "ingestion": "orders",
                    "ingestion_id": 1,
                    "status": "SUCCESS",
                    "trigger": "api",
                    "files_discovered": 120,
                    "files_new": 20,
                    "files_changed": 0,
                    "files_succeeded": 19,
                    "files_failed": 1,
                    "files_skipped": 0,
                    "records_ingested": 190000,
                    "bytes_read": 52428800,
                    "snapshots_committed": 1,
                    "listing": "incremental",
                    "list_requests": 1,
                    "files_missed_by_incremental": 0,
                    "duration_seconds": 3.2,
                    "error_message": None,
                    "cancel_requested": False,
                    "created_at": "2025-01-02T03:04:05Z",
                    "started_at": "2025-01-02T03:04:06Z",
                    "finished_at": "2025-01-02T03:04:09Z",
                }
            ]
        }
    )

    id: int
    run_id: int
    ingestion: str
    ingestion_id: int
    status: RunStatus
    trigger: str
    files_discovered: int
    files_new: int
    files_changed: int
    files_succeeded: int
    files_failed: int
    files_skipped: int
    records_ingested: int
    bytes_read: int
    snapshots_committed: int
    listing: Listing | None = Field(description="how discovery listed; null until it did (or full if requested)")
    list_requests: int = Field(description="S3 LIST requests made by discovery")
    files_missed_by_incremental: int = Field(
        description="new or changed files a full listing found that the incremental listing had missed"
    )
    duration_seconds: float | None
    error_message: str | None
    cancel_requested: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @field_serializer("error_message")
    def _no_secrets(self, text: str | None) -> str | None:
        return redact_optional(text)

    @classmethod
    def of(cls, run: Run, ingestion_name: str) -> Self:
        return cls.model_validate(
            runs.summary(run, ingestion_name)
            | {
                "id": run.id,
                "ingestion_id": run.ingestion_id,
                "trigger": run.trigger,
                "cancel_requested": run.cancel_requested,
                "created_at": run.created_at,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
            }
        )


class RunTrigger(BaseModel):
    """Options of a triggered run (the body may be left out)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"full_listing": True}]})

    full_listing: bool = Field(default=False, description="list the whole source, reconciling an incremental listing")


class IngestionDetail(IngestionOut):
    """An ingestion with its ledger counts by file status and its last run."""

    files: dict[str, int] = Field(description="files by status", examples=[{"SUCCESS": 19, "FAILED": 1}])
    last_run: RunOut | None
    listing_watermark: str | None = Field(default=None, description="where the next incremental listing starts")
    last_full_listing_at: dt.datetime | None = None


class IngestionPage(BaseModel):
    items: list[IngestionOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class RunList(BaseModel):
    items: list[RunOut]


class FileOut(BaseModel):
    """One file version of the ledger (its columns; ``file_path`` is the full URI)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 7,
                    "file_path": "s3://landing/orders/2025/01/02/part-0001.jsonl",
                    "status": "FAILED",
                    "size": 1024,
                    "etag": '"9b2cf535f27731c974343645a3985328"',
                    "version": 1,
                    "modified_at": "2025-01-02T03:00:00Z",
                    "discovered_at": "2025-01-02T03:04:06Z",
                    "started_at": "2025-01-02T03:04:07Z",
                    "processed_at": "2025-01-02T03:04:08Z",
                    "records_ingested": None,
                    "bytes_read": 1024,
                    "processing_duration_ms": 12,
                    "error_type": "CorruptFile",
                    "error_message": "line 3: invalid JSON",
                    "retry_count": 1,
                    "next_attempt_at": "2025-01-02T03:05:08Z",
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "snapshot_id": None,
                    "run_id": 42,
                }
            ]
        }
    )

    id: int
    file_path: str
    status: FileStatus
    size: int
    etag: str
    version: int
    modified_at: dt.datetime | None
    discovered_at: dt.datetime
    started_at: dt.datetime | None
    processed_at: dt.datetime | None
    records_ingested: int | None
    bytes_read: int | None
    processing_duration_ms: int | None
    error_type: str | None
    error_message: str | None
    retry_count: int
    next_attempt_at: dt.datetime | None
    lease_owner: str | None
    lease_expires_at: dt.datetime | None
    snapshot_id: int | None
    run_id: int | None

    @field_serializer("error_message")
    def _no_secrets(self, text: str | None) -> str | None:
        # Rows written before redaction existed, or by another writer, are masked on the way out.
        return redact_optional(text)


class FilePage(BaseModel):
    items: list[FileOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class RetryRequest(BaseModel):
    """Which FAILED files to make eligible again now: one (``path``: key or s3:// URI) or all."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"path": "2025/01/02/part-0001.jsonl"}]})

    path: str | None = Field(default=None, min_length=1, max_length=2000)


class RetryResult(BaseModel):
    retried: int = Field(description="FAILED files made claimable now", examples=[1])


class SkipRequest(BaseModel):
    """Why the operator sets the file aside (kept in the ledger and the file's history)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "test data, not for prod"}]})

    reason: str = Field(min_length=1, max_length=2000)


class ReingestRequest(BaseModel):
    """Under ``on_change: append`` re-reading adds the rows a second time: say so to do it anyway."""

    model_config = ConfigDict(extra="forbid")

    allow_duplicates: bool = False


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "grafana", "role": "reader"}]})

    name: Name
    role: Role


class TokenOut(BaseModel):
    """A token as listed: never its secret, nor the secret's hash."""

    id: int
    name: str
    role: Role
    created_at: dt.datetime
    last_used_at: dt.datetime | None = Field(description="refreshed at most once a minute")
    revoked_at: dt.datetime | None

    @classmethod
    def of(cls, t: ApiToken) -> Self:
        return cls.model_validate(
            {
                "id": t.id,
                "name": t.name,
                "role": t.role,
                "created_at": t.created_at,
                "last_used_at": t.last_used_at,
                "revoked_at": t.revoked_at,
            }
        )


class TokenCreated(TokenOut):
    """A new token with its secret: shown this once, stored only as a hash."""

    token: str = Field(examples=["ifl_3q2-7wJ1mYpXc0bKQ9yZ5fV8aR4tN6uE0hL2sD1gPzM"])


class TokenList(BaseModel):
    items: list[TokenOut]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str] = Field(examples=[{"database": "ok", "catalog": "ok"}])
