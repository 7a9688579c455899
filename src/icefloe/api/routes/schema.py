"""``/api/v1/ingestions/{id}/schema``: pending schema changes, approving or rejecting them, and the
table's schema history (the same functions as `icefloe schema …`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from icefloe import schema_changes
from icefloe.api.deps import DbDep, IngestionDep, Operator, Reader, RuntimeDep
from icefloe.api.problems import responses

router = APIRouter(prefix="/ingestions/{ingestion_id}/schema", tags=["schema"])

ChangeId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the pending change's id", examples=[3])]


class Change(BaseModel):
    added: list[dict[str, Any]] = Field(description="columns added: {name, type}")
    widened: list[dict[str, Any]] = Field(description="columns widened: {name, from, to}")


class PendingChangeOut(BaseModel):
    id: int
    change: Change
    description: str = Field(examples=["adds email (string); widens amount int → long"])
    files: int = Field(description="files HELD for this change")
    first_file: str | None
    detected_at: dt.datetime


class DecisionOut(BaseModel):
    id: int
    status: str = Field(description="APPROVED or REJECTED")
    description: str
    files: int = Field(description="files made claimable (approved) or FAILED SchemaRejected (rejected)")
    decided_by: str = Field(description="the token's name")
    schema_id: int | None = Field(description="the table's Iceberg schema id after an approval")


class SchemaVersionOut(BaseModel):
    id: int
    schema_id: int | None = Field(description="Iceberg schema id")
    status: str = Field(description="CREATED, APPLIED (add-columns) or APPROVED")
    change: Change
    description: str
    file: str | None = Field(description="the file that introduced it")
    approved_by: str | None = Field(description="token name, or cli")
    at: dt.datetime


@router.get(
    "/pending",
    response_model=list[PendingChangeOut],
    responses=responses(401, 403, 404, 422),
    summary="Pending changes",
)
def list_pending(_: Reader, ingestion: IngestionDep, db: DbDep) -> list[PendingChangeOut]:
    """Changes that files wait for (`schema_evolution: approve`), oldest first."""
    return [PendingChangeOut.model_validate(schema_changes.as_dict(c)) for c in schema_changes.pending(db, ingestion)]


@router.post(
    "/pending/{change_id}/approve",
    response_model=DecisionOut,
    responses=responses(401, 403, 404, 409, 422),
    summary="Approve a change",
)
def approve_change(token: Operator, ingestion: IngestionDep, change_id: ChangeId, rt: RuntimeDep) -> DecisionOut:
    """Apply the change to the table; its HELD files become claimable (the next run ingests them).
    409 when the change is not pending."""
    decision = schema_changes.approve(rt.db, rt.catalog, ingestion, change_id, actor=token.name)
    return DecisionOut.model_validate(schema_changes.as_dict(decision))


@router.post(
    "/pending/{change_id}/reject",
    response_model=DecisionOut,
    responses=responses(401, 403, 404, 409, 422),
    summary="Reject a change",
)
def reject_change(token: Operator, ingestion: IngestionDep, change_id: ChangeId, db: DbDep) -> DecisionOut:
    """Its HELD files become FAILED with `error_type` SchemaRejected. 409 when the change is not pending."""
    decision = schema_changes.reject(db, ingestion, change_id, actor=token.name)
    return DecisionOut.model_validate(schema_changes.as_dict(decision))


@router.get(
    "/history", response_model=list[SchemaVersionOut], responses=responses(401, 403, 404, 422), summary="Schema history"
)
def schema_history(_: Reader, ingestion: IngestionDep, db: DbDep) -> list[SchemaVersionOut]:
    """Every schema version icefloe gave the table, in the order applied."""
    return [SchemaVersionOut.model_validate(schema_changes.as_dict(v)) for v in schema_changes.history(db, ingestion)]
