"""``/api/v1/ingestions/{id}/files``: the ledger of one ingestion, one file, retries, and the
per-file operations (retry, skip, re-ingest) of :mod:`icefloe.file_operations`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query
from pydantic import AwareDatetime

from icefloe import file_operations, ingestions, ledger
from icefloe.api import pagination
from icefloe.api.deps import DbDep, FileId, IngestionDep, Operator, Reader
from icefloe.api.ledger_schemas import FileOut, FilePage, ReingestRequest, RetryRequest, RetryResult, SkipRequest
from icefloe.api.problems import responses
from icefloe.models import FileStatus

router = APIRouter(prefix="/ingestions/{ingestion_id}/files", tags=["files"])

_READ = responses(401, 403, 404, 422)
Time = Annotated[AwareDatetime | None, Query(description="ISO-8601 with a time zone")]


@router.get("", response_model=FilePage, responses=_READ, summary="List the ledger")
def list_files(
    _: Reader,
    ingestion: IngestionDep,
    db: DbDep,
    status: Annotated[FileStatus | None, Query()] = None,
    path_prefix: Annotated[
        str | None,
        Query(max_length=2000, description="key prefix in the source bucket, or an s3:// URI prefix"),
    ] = None,
    modified_since: Time = None,
    modified_until: Time = None,
    processed_since: Time = None,
    processed_until: Time = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=100, description="next_cursor of the previous page")] = None,
) -> FilePage:
    """In id order, a page at a time. The cursor is a keyset position: pages stay correct while
    discovery adds files (new files come after every cursor). Time bounds are `since <= t < until`."""
    with db.connect() as conn:
        rows = ledger.list_files(
            conn,
            ingestion.id,
            status=status,
            path_prefix=ingestions.file_uri(ingestion, path_prefix) if path_prefix else None,
            after_id=pagination.decode(cursor),
            modified_since=modified_since,
            modified_until=modified_until,
            processed_since=processed_since,
            processed_until=processed_until,
            limit=limit + 1,
        )
    items, next_cursor = pagination.page(rows, limit, lambda r: int(str(r["id"])))
    return FilePage(items=[FileOut.model_validate(r) for r in items], next_cursor=next_cursor)


@router.get("/{file_id}", response_model=FileOut, responses=_READ, summary="Read one file")
def read_file(_: Reader, ingestion: IngestionDep, file_id: FileId, db: DbDep) -> FileOut:
    with db.connect() as conn:
        return FileOut.model_validate(ledger.get_file(conn, ingestion.id, file_id))


@router.post(
    "/retry",
    response_model=RetryResult,
    responses=responses(400, 401, 403, 404, 422),
    summary="Retry FAILED files",
)
def retry_files(
    _: Operator, ingestion: IngestionDep, db: DbDep, body: Annotated[RetryRequest | None, Body()] = None
) -> RetryResult:
    """Make FAILED files claimable now with a fresh retry budget (as `icefloe retry`): all of
    them, or the one `path` names. The next run picks them up."""
    path = body.path if body is not None else None
    with db.begin() as conn:
        n = ledger.make_retryable(conn, ingestion.id, ingestions.file_uri(ingestion, path) if path else None)
    return RetryResult(retried=n)


_ACT = responses(400, 401, 403, 404, 409, 422)


def _after(db: DbDep, ingestion: IngestionDep, file_id: int) -> FileOut:
    with db.connect() as conn:
        return FileOut.model_validate(ledger.get_file(conn, ingestion.id, file_id))


@router.post("/{file_id}/retry", response_model=FileOut, responses=_ACT, summary="Retry one FAILED file")
def retry_file(token: Operator, ingestion: IngestionDep, file_id: FileId, db: DbDep) -> FileOut:
    """DISCOVERED now with a fresh retry budget; 409 unless it is FAILED."""
    file_operations.retry_file(db, ingestion, file_id, actor=token.name)
    return _after(db, ingestion, file_id)


@router.post("/{file_id}/skip", response_model=FileOut, responses=_ACT, summary="Skip one file")
def skip_file(token: Operator, ingestion: IngestionDep, file_id: FileId, db: DbDep, body: SkipRequest) -> FileOut:
    """SKIPPED with the reason, until its content changes; 409 if it is being processed or ingested."""
    file_operations.skip_file(db, ingestion, file_id, body.reason, actor=token.name)
    return _after(db, ingestion, file_id)


@router.post("/{file_id}/reingest", response_model=FileOut, responses=_ACT, summary="Read one file again")
def reingest_file(
    token: Operator,
    ingestion: IngestionDep,
    file_id: FileId,
    db: DbDep,
    body: Annotated[ReingestRequest | None, Body()] = None,
) -> FileOut:
    """A new version of the file, read by the next run; under ``on_change: replace`` its rows are
    replaced exactly once. 422 under ``append`` without ``allow_duplicates``."""
    allow = body.allow_duplicates if body is not None else False
    file_operations.reingest_file(db, ingestion, file_id, actor=token.name, allow_duplicates=allow)
    return _after(db, ingestion, file_id)
