"""Schema changes of an ingestion's table: pending approvals, decisions and the version history.

The CLI (`icefloe schema …`), the API (`/ingestions/{id}/schema/…`) and the dashboard call
:func:`pending`, :func:`approve`, :func:`reject` and :func:`history`; the worker calls
:func:`hold` for files whose change waits for approval, and :func:`record_applied` in the commit
that applied a change (``--schema-evolution add-columns``).

Every statement that decides about a pending change runs under one advisory lock per ingestion,
so a file held while its change is approved is either held before the approval (and released
by it) or sees the approval (and is given back to be read again): never held for a change that
was already approved.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, text

from icefloe import ledger
from icefloe.errors import CommitConflictError, ConfigurationError, ConflictError, NotFoundError
from icefloe.evolution import SchemaDiff, describe_change, evolve
from icefloe.ledger import ClaimedFile
from icefloe.redaction import redact_text

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from icefloe.models import Ingestion

log = logging.getLogger(__name__)

CLI_ACTOR = "cli"  # who decided, when it was not an API token
_APPLY_ATTEMPTS = 10


@dataclass(frozen=True)
class PendingChange:
    """A change files wait for (``icefloe schema pending``)."""

    id: int
    change: dict[str, Any]  # {"added": [{name, type}], "widened": [{name, from, to}]}
    description: str
    files: int
    first_file: str | None
    detected_at: dt.datetime


@dataclass(frozen=True)
class Decision:
    """What an approval or a rejection did."""

    id: int
    status: str  # APPROVED | REJECTED
    description: str
    files: int  # files made claimable (approved) or FAILED (rejected)
    decided_by: str
    schema_id: int | None  # the table's Iceberg schema id after an approval


@dataclass(frozen=True)
class SchemaVersion:
    """One schema version of the table as icefloe made it (``icefloe schema history``)."""

    id: int
    schema_id: int | None
    status: str  # CREATED | APPLIED (add-columns) | APPROVED
    change: dict[str, Any]
    description: str
    file: str | None  # the file that introduced it
    approved_by: str | None  # token name or "cli" (APPROVED only)
    at: dt.datetime  # when it was applied


def _public(change: dict[str, Any]) -> dict[str, Any]:
    return {"added": change.get("added", []), "widened": change.get("widened", [])}


def _lock(conn: Connection, ingestion_id: int) -> None:
    conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended('icefloe:schema-changes:' || :i, 0))"),
        {"i": str(ingestion_id)},
    )


# ----------------------------------------------------------------------------- reading


def pending(db: Engine, ingestion: Ingestion) -> list[PendingChange]:
    """The changes waiting for a decision, oldest first, with the number of files held for each."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT c.id, c.change, c.first_file, c.detected_at,
                       (SELECT count(*) FROM files f WHERE f.schema_change_id = c.id AND f.status = 'HELD') AS files
                FROM schema_changes c
                WHERE c.ingestion_id = :i AND c.status = 'PENDING'
                ORDER BY c.id
                """
            ),
            {"i": ingestion.id},
        ).all()
    return [
        PendingChange(r.id, _public(r.change), describe_change(r.change), int(r.files), r.first_file, r.detected_at)
        for r in rows
    ]


def history(db: Engine, ingestion: Ingestion) -> list[SchemaVersion]:
    """Every schema version icefloe gave the table for this ingestion, in the order applied."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT id, schema_id, status, change, first_file, decided_by, coalesce(decided_at, detected_at) AS at
                FROM schema_changes
                WHERE ingestion_id = :i AND status IN ('CREATED', 'APPLIED', 'APPROVED')
                ORDER BY coalesce(decided_at, detected_at), id
                """
            ),
            {"i": ingestion.id},
        ).all()
    return [
        SchemaVersion(
            r.id,
            r.schema_id,
            r.status,
            _public(r.change),
            describe_change(r.change) if r.status != "CREATED" else "table created",
            r.first_file,
            r.decided_by if r.status == "APPROVED" else None,
            r.at,
        )
        for r in rows
    ]


# ----------------------------------------------------------------------------- deciding


def _pending_row(conn: Connection, ingestion: Ingestion, change_id: int) -> Any:
    _lock(conn, ingestion.id)
    row = conn.execute(
        text("SELECT id, status, change FROM schema_changes WHERE id = :id AND ingestion_id = :i FOR UPDATE"),
        {"id": change_id, "i": ingestion.id},
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"ingestion {ingestion.name!r} has no schema change {change_id}")
    if row.status != "PENDING":
        raise ConflictError(f"schema change {change_id} of {ingestion.name!r} is {row.status}, not PENDING")
    return row


def approve(db: Engine, catalog: Catalog, ingestion: Ingestion, change_id: int, *, actor: str) -> Decision:
    """Apply pending change ``change_id`` to the table and make its HELD files claimable.

    The Iceberg schema update is retried on commit conflicts (another worker committing meanwhile:
    both land). It happens before the ledger records the decision: if the ledger update is lost,
    the change is still PENDING and approving again finds it applied (a no-op update).
    """
    with db.begin() as conn:
        row = _pending_row(conn, ingestion, change_id)
        schema_id = apply_change(catalog, ingestion.table_identifier, row.change)
        conn.execute(
            text(
                "UPDATE schema_changes SET status = 'APPROVED', decided_at = now(), decided_by = :by, "
                "schema_id = :schema_id WHERE id = :id"
            ),
            {"id": change_id, "by": actor, "schema_id": schema_id},
        )
        files = conn.execute(
            text(
                """
                UPDATE files SET status = 'DISCOVERED', next_attempt_at = NULL, error_type = NULL,
                    error_message = NULL
                WHERE ingestion_id = :i AND schema_change_id = :id AND status = 'HELD'
                """
            ),
            {"i": ingestion.id, "id": change_id},
        ).rowcount
    log.info("schema change %s of %s approved by %s: %d file(s) claimable", change_id, ingestion.name, actor, files)
    return Decision(change_id, "APPROVED", describe_change(row.change), files, actor, schema_id)


def reject(db: Engine, ingestion: Ingestion, change_id: int, *, actor: str) -> Decision:
    """Reject pending change ``change_id``: its HELD files become FAILED ``SchemaRejected`` (not
    retried by themselves; `icefloe retry` reads them again, and holds them again if they still differ)."""
    with db.begin() as conn:
        row = _pending_row(conn, ingestion, change_id)
        description = describe_change(row.change)
        conn.execute(
            text("UPDATE schema_changes SET status = 'REJECTED', decided_at = now(), decided_by = :by WHERE id = :id"),
            {"id": change_id, "by": actor},
        )
        files = conn.execute(
            text(
                """
                UPDATE files SET status = 'FAILED', error_type = 'SchemaRejected',
                    error_message = files.file_path || ': schema change rejected by ' || :by || ': ' || :what,
                    next_attempt_at = 'infinity'::timestamptz, processed_at = now()
                WHERE ingestion_id = :i AND schema_change_id = :id AND status = 'HELD'
                """
            ),
            {"i": ingestion.id, "id": change_id, "by": actor, "what": description},
        ).rowcount
    log.info("schema change %s of %s rejected by %s: %d file(s) FAILED", change_id, ingestion.name, actor, files)
    return Decision(change_id, "REJECTED", description, files, actor, None)


def apply_change(catalog: Catalog, identifier: str, change: dict[str, Any]) -> int:
    """Add and widen the columns ``change`` names on the table; returns its schema id after."""
    from pyiceberg.exceptions import CommitFailedException

    from icefloe import tables

    table = tables.load_table(catalog, identifier)
    if table is None:
        raise ConfigurationError(f"table {identifier} does not exist")
    for _ in range(_APPLY_ATTEMPTS):
        try:
            with table.update_schema() as update:
                evolve(update, change)
            return table.refresh().schema().schema_id
        except CommitFailedException:
            table = table.refresh()
    raise CommitConflictError(f"could not change the schema of {identifier}: too many conflicts")


# ----------------------------------------------------------------------------- the worker's side


@dataclass(frozen=True)
class HeldFile:
    """A file of a batch whose change waits for approval (``--schema-evolution approve``)."""

    file: ClaimedFile
    change: SchemaDiff
    message: str
    bytes_read: int = 0
    duration_ms: int = 0


def hold(
    conn: Connection, ingestion_id: int, table_identifier: str, held: Sequence[HeldFile], batch_id: uuid.UUID
) -> int:
    """HELD the files, each with the pending change it needs (one record per distinct change).

    A file whose change was approved meanwhile is given back instead (claimable again, no attempt
    counted): read again, it finds the table changed. Fenced on ``lease_token``. Returns files held.
    """
    if not held:
        return 0
    _lock(conn, ingestion_id)
    count = 0
    for h in held:
        fingerprint = h.change.fingerprint
        approved = conn.execute(
            text(
                "SELECT 1 FROM schema_changes WHERE ingestion_id = :i AND fingerprint = :fp AND status = 'APPROVED' "
                "AND decided_at >= :claimed"
            ),
            {"i": ingestion_id, "fp": fingerprint, "claimed": h.file.first_claimed_at - dt.timedelta(minutes=10)},
        ).first()
        if approved is not None:
            ledger.release(conn, [h.file], batch_id)
            continue
        conn.execute(
            text(
                """
                INSERT INTO schema_changes (ingestion_id, table_identifier, fingerprint, change, status, first_file)
                VALUES (:i, :t, :fp, CAST(:change AS jsonb), 'PENDING', :first)
                ON CONFLICT (ingestion_id, fingerprint) WHERE status = 'PENDING' DO NOTHING
                """
            ),
            {
                "i": ingestion_id,
                "t": table_identifier,
                "fp": fingerprint,
                "change": _json(h.change.as_json()),
                "first": h.file.file_path,
            },
        )
        change_id = conn.execute(
            text("SELECT id FROM schema_changes WHERE ingestion_id = :i AND fingerprint = :fp AND status = 'PENDING'"),
            {"i": ingestion_id, "fp": fingerprint},
        ).scalar_one()
        count += conn.execute(
            text(
                """
                WITH changed AS (
                UPDATE files SET status = 'HELD', schema_change_id = :change_id, error_type = 'SchemaChangePending',
                    error_message = :message, processed_at = now(), bytes_read = :bytes_read,
                    processing_duration_ms = :duration_ms, lease_expires_at = NULL, batch_id = NULL,
                    batch_ids = array_remove(batch_ids, CAST(:batch_id AS uuid))
                WHERE id = :id AND lease_token = :token
                RETURNING id, version, run_id, lease_owner, status, error_type, error_message)
                INSERT INTO file_attempts (file_id, version, run_id, batch_id, worker_id, status, error_type,
                    error_message)
                SELECT id, version, run_id, CAST(:batch_id AS uuid), lease_owner, status, error_type, error_message
                FROM changed
                """
            ),
            {
                "change_id": change_id,
                "message": redact_text(h.message)[:4000],
                "bytes_read": h.bytes_read,
                "duration_ms": h.duration_ms,
                "batch_id": batch_id,
                "id": h.file.id,
                "token": h.file.lease_token,
            },
        ).rowcount
    return count


def record_applied(
    conn: Connection,
    *,
    ingestion_id: int,
    table_identifier: str,
    change: SchemaDiff | None,
    created: bool,
    first_file: str | None,
    schema_id: int,
) -> None:
    """Record in the history a schema version a batch's commit made: the table's creation (once:
    two workers may both have created it, one of them in vain), or a change add-columns applied in
    the same commit as the rows that needed it. Called under the table's commit lock."""
    status = "CREATED" if created else "APPLIED"
    body = change.as_json() if change else {"added": [], "widened": []}
    conn.execute(
        text(
            """
            INSERT INTO schema_changes (ingestion_id, table_identifier, fingerprint, change, status, first_file,
                decided_at, schema_id)
            SELECT :i, :t, :fp, CAST(:change AS jsonb), CAST(:status AS text), :first, now(), :schema_id
            WHERE CAST(:status AS text) <> 'CREATED'
               OR NOT EXISTS (SELECT 1 FROM schema_changes WHERE ingestion_id = :i AND status = 'CREATED')
            """
        ),
        {
            "i": ingestion_id,
            "t": table_identifier,
            "fp": change.fingerprint if change else "",
            "change": _json(body),
            "status": status,
            "first": first_file,
            "schema_id": schema_id,
        },
    )


def _json(value: Any) -> str:
    return json.dumps(value)


def as_dict(obj: PendingChange | Decision | SchemaVersion) -> dict[str, Any]:
    """A result as the CLI's --json and the API show it."""
    return dataclasses.asdict(obj)
