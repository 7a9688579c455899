"""Response and request bodies of the API's runs, files, tokens and probes (pydantic); the
ingestions' are in :mod:`icefloe.api.schemas`. Field names follow the ledger's columns and
``icefloe run --json``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from icefloe import runs
from icefloe.models import ApiToken, CleanupStatus, Discovery, FileStatus, Listing, Role, Run, RunStatus
from icefloe.redaction import redact_optional

# Field types both modules of bodies use (schemas.py imports them from here).
INT32 = 2**31 - 1
INT64 = 2**63 - 1
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f/]+$")]


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
                    "discovery": "listing",
                    "event_messages": 0,
                    "files_missed_by_events": 0,
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
    records_rejected: int = Field(description="bad records skipped or quarantined (--on-bad-record)")
    bytes_read: int
    snapshots_committed: int
    listing: Listing | None = Field(description="how discovery listed; null until it did (or full if requested)")
    list_requests: int = Field(description="S3 LIST requests made by discovery")
    files_missed_by_incremental: int = Field(
        description="new or changed files a full listing found that the incremental listing had missed"
    )
    discovery: Discovery | None = Field(description="listing or events; null until discovery ran")
    event_messages: int = Field(description="queue messages read by event-driven discovery")
    files_missed_by_events: int = Field(
        description="new or changed files a reconciling listing found that the event notifications never delivered"
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
                    "cleanup_status": None,
                    "cleanup_at": None,
                    "cleanup_error": None,
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
    records_rejected: int | None = Field(description="bad records skipped or quarantined (--on-bad-record)")
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
    cleanup_status: CleanupStatus | None = Field(
        description="source clean-up (--after-ingest): null not yet, DONE, FAILED"
    )
    cleanup_at: dt.datetime | None
    cleanup_error: str | None

    @field_serializer("error_message", "cleanup_error")
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
