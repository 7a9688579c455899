"""icefloe's error tree.

Every error a user can see derives from :class:`IcefloeError` and carries one readable line.
Errors from botocore, pyarrow, pyiceberg and SQLAlchemy are translated once, where they are
raised (``raise ... from exc``), so callers only deal with this tree::

    IcefloeError
    ├── ConfigurationError          wrong usage or configuration (exit code 2)
    │   ├── NotFoundError           no such ingestion / run / file
    │   └── ConflictError           the request clashes with the current state (duplicate name, busy)
    ├── AuthenticationError         no valid API token (missing, unknown or revoked)
    ├── PermissionDeniedError       the API token's role does not allow this
    ├── SourceError                 the source as a whole cannot be listed or reached
    ├── FileError                   one file cannot be ingested (the file is FAILED, the rest goes on)
    │   ├── PermanentFileError      corrupt or non-conforming data: retrying now cannot help
    │   └── TransientFileError      S3 5xx / throttling / timeouts: retried in place first
    ├── ObjectChangedError          the object changed after it was listed (HTTP 412): rediscover it
    ├── LeaseLostError              another worker owns the batch now: stop work on it
    └── CommitError                 the Iceberg commit failed
        └── CommitConflictError     someone else committed first: reload and retry
"""

from __future__ import annotations


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

    retryable = False

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
    retryable = True


class ObjectChangedError(IcefloeError):
    """The object's ETag no longer matches the listed one (HTTP 412 on If-Match)."""

    error_type = "ObjectChanged"


class LeaseLostError(IcefloeError):
    """The worker's lease on a batch was taken over (fencing token changed)."""

    error_type = "LeaseLost"


class CommitError(IcefloeError):
    """The Iceberg commit failed."""

    error_type = "CommitError"


class CommitConflictError(CommitError):
    """The table head moved under us; reload, re-check the batch ids, retry."""

    error_type = "CommitConflict"
