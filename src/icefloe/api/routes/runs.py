"""``/api/v1/runs/{id}``: read a run (live counters while it runs) and cancel it."""

from __future__ import annotations

from fastapi import APIRouter, status

from icefloe import ingestions, runs
from icefloe.api.deps import DbDep, Operator, Reader, RunId
from icefloe.api.ledger_schemas import RunOut
from icefloe.api.problems import responses

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("/{run_id}", response_model=RunOut, responses=responses(401, 403, 404, 422), summary="Read a run")
def read_run(_: Reader, run_id: RunId, db: DbDep) -> RunOut:
    run = runs.get(db, run_id)
    return RunOut.of(run, ingestions.get(db, run.ingestion_id).name)


@router.post(
    "/{run_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunOut,
    responses=responses(401, 403, 404, 409, 422),
    summary="Cancel a run",
)
def cancel_run(_: Operator, run_id: RunId, db: DbDep) -> RunOut:
    """A PENDING run is CANCELLED at once. A RUNNING one gets `cancel_requested`: its worker stops
    after the batch in flight (which still commits). 409 for a run that already finished."""
    run = runs.cancel(db, run_id)
    return RunOut.of(run, ingestions.get(db, run.ingestion_id).name)
