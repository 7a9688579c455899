"""``/api/v1/ingestions``: define, list, read, change, pause, resume and delete ingestions; trigger
and list their runs. Reads need a reader token; triggering a run an operator; the rest an admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from icefloe import ingestions, ledger, runs
from icefloe.api import pagination
from icefloe.api.deps import Admin, DbDep, IngestionDep, Operator, Reader, RuntimeDep
from icefloe.api.ledger_schemas import RunList, RunOut, RunTrigger
from icefloe.api.problems import responses
from icefloe.api.schemas import IngestionCreate, IngestionDetail, IngestionOut, IngestionPage, IngestionUpdate
from icefloe.errors import ConfigurationError
from icefloe.ingestions import IngestionSpec
from icefloe.models import Format, IngestionStatus
from icefloe.stores import parse_source

router = APIRouter(prefix="/ingestions", tags=["ingestions"])

_READ = responses(401, 403, 404, 422)
_WRITE = responses(401, 403, 404, 409, 422)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=IngestionOut,
    responses=responses(400, 401, 403, 409, 422),
    summary="Define an ingestion",
)
def create_ingestion(
    _: Admin, rt: RuntimeDep, body: IngestionCreate, request: Request, response: Response
) -> IngestionOut:
    """The same as `icefloe ingestion create`: the same checks, the same record. A ``file://`` source
    is refused unless ``ICEFLOE_API_FILE_SOURCES=true``: it would read the server's own files."""
    db = rt.db
    if parse_source(body.source).scheme == "file" and not rt.settings.api.file_sources:
        raise ConfigurationError(
            "file:// sources are refused through the API (they read the server's own files); "
            "set ICEFLOE_API_FILE_SOURCES=true on the server to allow them"
        )
    created = ingestions.create(db, IngestionSpec(**body.model_dump(by_alias=True)))
    response.headers["Location"] = str(request.url_for("read_ingestion", ingestion_id=str(created.id)).path)
    return IngestionOut.of(created)


@router.get("", response_model=IngestionPage, responses=responses(401, 403, 422), summary="List ingestions")
def list_ingestions(
    _: Reader,
    db: DbDep,
    status: Annotated[IngestionStatus | None, Query(description="only ACTIVE or PAUSED ones")] = None,
    format: Annotated[Format | None, Query()] = None,
    name_prefix: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=100, description="next_cursor of the previous page")] = None,
) -> IngestionPage:
    """In id order, a page at a time (keyset: pages stay correct while ingestions are added)."""
    found = ingestions.search(
        db,
        status=status,
        format=format,
        name_prefix=name_prefix,
        after_id=pagination.decode(cursor),
        limit=limit + 1,
    )
    items, next_cursor = pagination.page(found, limit, lambda i: i.id)
    return IngestionPage(items=[IngestionOut.of(i) for i in items], next_cursor=next_cursor)


@router.get("/{ingestion_id}", response_model=IngestionDetail, responses=_READ, summary="Read an ingestion")
def read_ingestion(_: Reader, ingestion: IngestionDep, db: DbDep) -> IngestionDetail:
    """With its ledger counts by file status and its last run (as `icefloe ingestion show`)."""
    location = parse_source(ingestion.source)
    with db.connect() as conn:
        counts = ledger.status_counts(conn, ingestion.id)
        state = ledger.listing_state(conn, ingestion.id, location.root, ingestion.full_listing_every_seconds)
    last = runs.list_for(db, ingestion.id, limit=1)
    return IngestionDetail(
        **IngestionOut.of(ingestion).model_dump(by_alias=True),
        files=counts,
        last_run=RunOut.of(last[0], ingestion.name) if last else None,
        listing_watermark=state.watermark,
        last_full_listing_at=state.last_full_listing_at,
    )


@router.patch(
    "/{ingestion_id}",
    response_model=IngestionOut,
    responses=responses(400, 401, 403, 404, 409, 422),
    summary="Change an ingestion",
)
def update_ingestion(_: Admin, ingestion: IngestionDep, db: DbDep, body: IngestionUpdate) -> IngestionOut:
    """Change options; `source`, `format` and `table` are fixed (define a new ingestion instead)."""
    return IngestionOut.of(ingestions.update(db, ingestion.id, body.changes()))


@router.post("/{ingestion_id}/pause", response_model=IngestionOut, responses=_READ, summary="Pause")
def pause_ingestion(_: Admin, ingestion: IngestionDep, db: DbDep) -> IngestionOut:
    """Workers leave its queued runs alone until it is resumed."""
    return IngestionOut.of(ingestions.set_status(db, ingestion.name, "PAUSED"))


@router.post("/{ingestion_id}/resume", response_model=IngestionOut, responses=_READ, summary="Resume")
def resume_ingestion(_: Admin, ingestion: IngestionDep, db: DbDep) -> IngestionOut:
    return IngestionOut.of(ingestions.set_status(db, ingestion.name, "ACTIVE"))


@router.delete(
    "/{ingestion_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_WRITE,
    summary="Delete an ingestion",
)
def delete_ingestion(_: Admin, ingestion: IngestionDep, db: DbDep) -> None:
    """Deletes its ledger (runs, files); the Iceberg table is kept. Refused with 409 while a worker
    holds a lease on one of its files; a queued run is deleted with it."""
    ingestions.delete(db, ingestion.name)


@router.post(
    "/{ingestion_id}/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunOut,
    responses=_WRITE,
    summary="Trigger a run",
)
def trigger_run(
    _: Operator,
    ingestion: IngestionDep,
    db: DbDep,
    request: Request,
    response: Response,
    body: RunTrigger | None = None,
) -> RunOut:
    """Queue a run (PENDING) for the workers; `Location` is the run to poll. 409 when a run of
    this ingestion is already queued or running. A paused ingestion's run waits for its resume.
    `{"full_listing": true}` makes it list the whole source (as `icefloe run --full-listing`)."""
    run = runs.enqueue(db, ingestion, trigger="api", full_listing=body is not None and body.full_listing)
    response.headers["Location"] = str(request.url_for("read_run", run_id=run.id).path)
    return RunOut.of(run, ingestion.name)


@router.get("/{ingestion_id}/runs", response_model=RunList, responses=_READ, summary="List runs")
def list_runs(
    _: Reader, ingestion: IngestionDep, db: DbDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> RunList:
    """The ingestion's latest runs, newest first."""
    return RunList(items=[RunOut.of(r, ingestion.name) for r in runs.list_for(db, ingestion.id, limit=limit)])
