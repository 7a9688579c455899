"""Request and response bodies of the REST API's ingestions (pydantic), with the examples the
OpenAPI shows; runs, files, tokens and probes are in :mod:`icefloe.api.ledger_schemas`.

Field names follow DESIGN.md's public contract: an ingestion uses the CLI's option names in
snake_case.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Self, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_serializer,
    model_validator,
)

from icefloe import ingestions
from icefloe.api.ledger_schemas import INT32, INT64, Name, RunOut
from icefloe.models import (
    Discovery,
    EngineName,
    Format,
    Ingestion,
    IngestionStatus,
    Listing,
    OnBadRecord,
    OnChange,
    SchemaEvolution,
)
from icefloe.redaction import redact_uri

# The enumerations are the ledger's own (icefloe.models), not copies.

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
    source: str = Field(
        max_length=2000, description="s3://bucket/prefix/, gs://bucket/prefix/, az://container/prefix/, file:///path/"
    )
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
    on_bad_record: OnBadRecord = Field(
        default="fail-file",
        description="a line or row that does not parse or fit: fail its file, skip or quarantine it",
    )
    max_bad_records: str | None = Field(
        default=None,
        max_length=20,
        pattern=r"^\s*\d+\s*%?\s*$",
        description="with skip/quarantine: a file with more bad records (N, or P% of its records) fails",
    )
    discovery: Discovery = Field(
        default="listing", description="listing: list the source; events: read S3 notifications from events_queue"
    )
    events_queue: str | None = Field(
        default=None, max_length=2000, description="events: the SQS queue URL the bucket's notifications go to"
    )
    reconcile_every_seconds: int = Field(
        default=86400, ge=1, le=INT32, description="events: a reconciling full listing this often"
    )
    after_ingest: str = Field(
        default="keep",
        max_length=2000,
        description="what becomes of a source file once ingested: keep, delete, move:PREFIX, tag:KEY=VALUE",
    )
    after_ingest_delay_seconds: int = Field(
        default=7 * 86400, ge=0, le=INT32, description="clean up files SUCCESS for longer than this"
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
    on_bad_record: Annotated[OnBadRecord | None, _not_null({"enum": list(get_args(OnBadRecord)), "type": "string"})] = (
        None
    )
    max_bad_records: str | None = Field(default=None, max_length=20, pattern=r"^\s*\d+\s*%?\s*$")
    discovery: Annotated[Discovery | None, _not_null({"enum": list(get_args(Discovery)), "type": "string"})] = None
    events_queue: str | None = Field(default=None, max_length=2000)
    reconcile_every_seconds: Annotated[
        int | None, Field(ge=1, le=INT32), _not_null({"type": "integer", "minimum": 1, "maximum": INT32})
    ] = None
    after_ingest: Annotated[str | None, Field(max_length=2000), _not_null({"type": "string", "maxLength": 2000})] = None
    after_ingest_delay_seconds: Annotated[
        int | None, Field(ge=0, le=INT32), _not_null({"type": "integer", "minimum": 0, "maximum": INT32})
    ] = None

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
            "max_bad_records",
            "events_queue",
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
                    "discovery": "listing",
                    "events_queue": None,
                    "reconcile_every_seconds": 86400,
                    "after_ingest": "keep",
                    "after_ingest_delay_seconds": 604800,
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
    on_bad_record: str
    max_bad_records: str | None
    discovery: str
    events_queue: str | None
    reconcile_every_seconds: int
    after_ingest: str
    after_ingest_delay_seconds: int
    status: IngestionStatus
    created_at: dt.datetime
    updated_at: dt.datetime

    @field_serializer("source", "spark_remote")
    def _no_credentials(self, uri: str | None) -> str | None:
        return redact_uri(uri) if uri is not None else None

    @classmethod
    def of(cls, i: Ingestion) -> Self:
        return cls.model_validate(ingestions.as_dict(i))


class IngestionDetail(IngestionOut):
    """An ingestion with its ledger counts by file status and its last run."""

    files: dict[str, int] = Field(description="files by status", examples=[{"SUCCESS": 19, "FAILED": 1}])
    last_run: RunOut | None
    listing_watermark: str | None = Field(default=None, description="where the next incremental listing starts")
    last_full_listing_at: dt.datetime | None = None


class IngestionPage(BaseModel):
    items: list[IngestionOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")
