"""icefloe's error tree.

Every error a user can see derives from :class:`IcefloeError` and carries one readable line.
Errors from botocore, pyarrow, pyiceberg and SQLAlchemy are translated once, where they are
raised (``raise ... from exc``), so callers only deal with this tree::

    IcefloeError
    ├── ConfigurationError          wrong usage or configuration (exit code 2)
    │   ├── NotFoundError           no such ingestion / run / file
    │   └── ConflictError           the request clashes with the current state (duplicate name, busy)
    │       └── RunInProgressError  a run of the ingestion is already queued or running
    ├── AuthenticationError         no valid API token (missing, unknown or revoked)
    ├── PermissionDeniedError       the API token's role does not allow this
    ├── EmbeddedServiceError        an embedded PostgreSQL/S3 is missing or does not start or stop
    ├── LedgerUnavailableError      the ledger's database cannot be reached now: wait, then resume
    ├── TableBusyError              the per-table commit lock was not free in time: back off, retry
    ├── SourceError                 the source as a whole cannot be listed or reached
    ├── FileError                   one file cannot be ingested (the file is FAILED, the rest goes on)
    │   ├── PermanentFileError      corrupt or non-conforming data: retrying now cannot help
    │   ├── TransientFileError      S3 5xx / throttling / timeouts: retried in place first
    │   └── SchemaChangePendingError  its schema change waits for approval (the file is HELD)
    ├── ObjectChangedError          the object changed after it was listed (HTTP 412): rediscover it
    ├── LeaseLostError              another worker owns the batch now: stop work on it
    │   └── SchemaRaceError         the table's columns changed under a staged batch: read it again
    ├── EngineError                 the engine itself (e.g. the Spark cluster) failed, not one file
    ├── CommitError                 the Iceberg commit failed, and did not land
    │   ├── CommitConflictError     the table head moved (another writer): search again, retry
    │   └── CommitOutcomeUnknownError  maybe landed (timeout, reset): the next search tells
    └── AlertDeliveryError          a channel could not deliver an alert
"""

from __future__ import annotations

from typing import Any


class IcefloeError(Exception):
    """Root of every error icefloe raises on purpose."""

    error_type = "IcefloeError"

    def __str__(self) -> str:
        # One line, always: users and the ledger see this text.
        return " ".join(super().__str__().split())


class ConfigurationError(IcefloeError):
    """Wrong usage or configuration; the CLI exits with code 2."""

    error_type = "ConfigurationError"


class NotFoundError(ConfigurationError):
    """A named ingestion, run or file does not exist."""

    error_type = "NotFound"


class ConflictError(ConfigurationError):
    """The request clashes with the current state: a duplicate name, an ingestion being processed,
    a run that already finished."""

    error_type = "Conflict"


class AuthenticationError(IcefloeError):
    """No valid API token: missing, unknown or revoked (HTTP 401)."""

    error_type = "Unauthenticated"


class PermissionDeniedError(IcefloeError):
    """The API token is valid but its role does not allow the operation (HTTP 403)."""

    error_type = "PermissionDenied"


class SourceError(IcefloeError):
    """The source (bucket, endpoint, credentials) cannot be used at all."""

    error_type = "SourceError"


class FileError(IcefloeError):
    """One file cannot be ingested. ``error_type`` is recorded in the ledger."""

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        if error_type is not None:
            self.error_type = error_type


class PermanentFileError(FileError):
    """The file's content is corrupt or does not fit the schema: not retried in place."""

    error_type = "CorruptFile"


class TransientFileError(FileError):
    """The file could not be fetched for a passing reason (5xx, throttling, timeout)."""

    error_type = "TransientError"


class SchemaChangePendingError(FileError):
    """The file's columns differ from the table's and the ingestion wants changes approved
    (``--schema-evolution approve``): the file is HELD with its pending change, not FAILED."""

    error_type = "SchemaChangePending"

    def __init__(self, message: str, *, change: Any) -> None:  # change: icefloe.evolution.SchemaDiff
        super().__init__(message)
        self.change = change


class ObjectChangedError(IcefloeError):
    """The object's ETag no longer matches the listed one (HTTP 412 on If-Match)."""

    error_type = "ObjectChanged"


class LeaseLostError(IcefloeError):
    """The worker's lease on a batch was taken over (fencing token changed)."""

    error_type = "LeaseLost"


class SchemaRaceError(LeaseLostError):
    """Another writer changed the table's columns after the batch's data files were written for an
    evolved schema: a column would get another field id. Nothing is committed; the batch's files
    are given back unpenalised and read again."""

    error_type = "SchemaRace"


class CommitError(IcefloeError):
    """The Iceberg commit failed."""

    error_type = "CommitError"


class CommitConflictError(CommitError):
    """The table head moved under us; reload, re-check the batch ids, retry."""

    error_type = "CommitConflict"


class CommitOutcomeUnknownError(CommitError):
    """The commit may or may not have landed (timeout, connection reset, catalog error after the
    request): keep the data files; the next attempt's snapshot search decides."""

    error_type = "CommitOutcomeUnknown"


class RunInProgressError(ConflictError):
    """A run of this ingestion is already queued or running (and concurrent runs are off)."""

    error_type = "RunInProgress"


class EmbeddedServiceError(IcefloeError):
    """An embedded service is missing, failed to start, or failed to stop."""

    error_type = "EmbeddedService"


class LedgerUnavailableError(IcefloeError):
    """The ledger's database cannot be reached (restart, failover, network cut).

    Raised by the ledger's engine in place of SQLAlchemy's connection errors
    (:mod:`icefloe.ledger.connection`); workers wait it out instead of failing the run.
    """

    error_type = "LedgerUnavailable"


class TableBusyError(IcefloeError):
    """The per-table commit lock stayed taken longer than a waiter may wait; back off and retry."""

    error_type = "TableBusy"


class EngineError(IcefloeError):
    """The engine itself failed (the Spark server, its connection or memory): no one file's fault."""

    error_type = "EngineError"


class AlertDeliveryError(IcefloeError):
    """A channel could not deliver an alert; the message names the channel, never its secrets."""

    error_type = "AlertDelivery"
