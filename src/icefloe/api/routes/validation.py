"""``POST /api/v1/ingestions/{id}/validate``: the dry run of `icefloe validate` (a reader's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from icefloe.api.deps import IngestionDep, Reader, RuntimeDep
from icefloe.api.problems import responses
from icefloe.redaction import redact_text, redact_uri
from icefloe.validate import validate

router = APIRouter(prefix="/ingestions", tags=["ingestions"])


class FileValidation(BaseModel):
    """What a run would make of one file not yet ingested."""

    file_path: str
    status: str = Field(description="NEW (not in the ledger, or changed), DISCOVERED, FAILED or HELD")
    verdict: str = Field(
        description="ok | skipped | quarantined | held | fails (under the ingestion's bad-record and schema policies)"
    )
    records: int | None = Field(description="good records")
    bad_records: int | None
    errors: list[str] = Field(description="the first bad records: line and why")
    new_columns: dict[str, str] = Field(description="columns the file would add to the table, with their types")
    schema_change: str | None = Field(
        default=None, description="the change the existing table would need (columns added, types widened)"
    )
    error_type: str | None = None
    error_message: str | None = None


class ValidationReport(BaseModel):
    items: list[FileValidation]
    error_type: str | None = Field(description="why a run would fail before reading a file (source unreachable)")
    error_message: str | None


@router.post(
    "/{ingestion_id}/validate",
    response_model=ValidationReport,
    responses=responses(401, 403, 404, 422),
    summary="Validate the files not yet ingested (a dry run)",
)
def validate_ingestion(
    _: Reader, ingestion: IngestionDep, rt: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> ValidationReport:
    """The same as `icefloe validate`: reads the files, commits nothing, records nothing. A source
    or catalog a run could not reach is said in ``error_type``/``error_message`` (200: the dry run
    did its job; the run would fail)."""
    result = validate(rt, ingestion, limit=limit)
    items = [FileValidation(**(r | {"file_path": redact_uri(r["file_path"])})) for r in result["items"]]
    message = result["error_message"]
    return ValidationReport(
        items=items, error_type=result["error_type"], error_message=redact_text(message) if message else None
    )
