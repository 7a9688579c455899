"""What an operator does to one file: retry it, skip it, or read it again.

The CLI (`icefloe files retry|skip|reingest`), the API (`POST …/files/{id}/retry|skip|reingest`) and
the dashboard's buttons call these functions, one each. Each is one UPDATE that names the statuses it
acts on, so it cannot race a worker: a file under a lease (PROCESSING) is refused, never touched — its
batch may be committing this very moment. Each action is recorded in the file's attempt history with
who did it (``operator <token name>`` or ``operator cli``).
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import Connection, Engine, text

from icefloe import ingestions, ledger
from icefloe.errors import ConfigurationError, ConflictError, NotFoundError
from icefloe.ledger.protocol import FRESH_VERSION_SET
from icefloe.models import Ingestion

# The statuses each action starts from. PROCESSING is in none of them (see the module's docstring).
RETRYABLE = ("FAILED",)
SKIPPABLE = ("DISCOVERED", "FAILED", "HELD")
REINGESTABLE = ("SUCCESS", "SKIPPED", "FAILED")


@dataclasses.dataclass(frozen=True)
class FileAction:
    """The file after an operator's action."""

    file_id: int
    file_path: str
    action: str
    status: str
    version: int


_RECORD = """
    INSERT INTO file_attempts (file_id, version, run_id, batch_id, worker_id, status, error_type, error_message)
    SELECT id, version, NULL, NULL, :actor, status, NULL, :note FROM changed
    RETURNING file_id
"""


def _locate(conn: Connection, ingestion: Ingestion, key: str | int) -> dict[str, object]:
    """The ledger row of a key (below the prefix, of the bucket, or a full URI) or a file id, locked."""
    if isinstance(key, int):
        row = ledger.get_file(conn, ingestion.id, key)
    else:
        found = ledger.find_file(conn, ingestion.id, ingestions.file_uri_candidates(ingestion, key))
        if found is None:
            raise NotFoundError(f"no file {key!r} in ingestion {ingestion.name!r} (icefloe files {ingestion.name})")
        row = found
    # Decide on the status read under the row lock: a worker's claim cannot slip in between.
    locked = conn.execute(
        text("SELECT id, file_path, status, cleanup_status FROM files WHERE id = :id FOR UPDATE"), {"id": row["id"]}
    ).mappings()
    return dict(locked.one())


def _refuse(row: dict[str, object], action: str, allowed: tuple[str, ...]) -> None:
    status = str(row["status"])
    if status in allowed:
        return
    path = row["file_path"]
    if status == "PROCESSING":
        raise ConflictError(f"{path} is being processed (a batch holds it); {action} it after the batch ends")
    hint = {
        ("retry", "SUCCESS"): "; to read it again use reingest",
        ("retry", "SKIPPED"): "; to read it use reingest",
        ("retry", "DISCOVERED"): ": it is already waiting for the next run",
        ("reingest", "DISCOVERED"): ": it is already waiting for the next run",
        ("retry", "HELD"): ": it waits for a schema change to be approved (icefloe schema pending)",
    }.get((action, status), "")
    raise ConflictError(f"cannot {action} {path}: it is {status}{hint}")


def _finish(conn: Connection, row: dict[str, object], action: str, sql: str, params: dict[str, object]) -> FileAction:
    result = conn.execute(text(sql), params | {"id": row["id"]}).one()
    return FileAction(int(str(row["id"])), str(row["file_path"]), action, result.status, result.version)


def _actor(actor: str) -> str:
    return f"operator {actor}"


def retry_file(db: Engine, ingestion: Ingestion, key: str | int, *, actor: str) -> FileAction:
    """A FAILED file claimable now, with a fresh retry budget (after the operator mended its cause)."""
    with db.begin() as conn:
        row = _locate(conn, ingestion, key)
        _refuse(row, "retry", RETRYABLE)
        return _finish(
            conn,
            row,
            "retry",
            """
            WITH changed AS (
                UPDATE files SET status = 'DISCOVERED', retry_count = 0, next_attempt_at = NULL
                WHERE id = :id RETURNING id, version, status
            ), recorded AS ("""
            + _RECORD
            + """) SELECT status, version FROM changed""",
            {"actor": _actor(actor), "note": "retry requested"},
        )


def skip_file(db: Engine, ingestion: Ingestion, key: str | int, reason: str, *, actor: str) -> FileAction:
    """A file not ingested (yet) set aside for good: SKIPPED with the operator's reason.

    Discovery leaves it so until its ETag changes (a new version is a new file to ingest)."""
    reason = " ".join(reason.split())
    if not reason:
        raise ConfigurationError("give a reason for skipping the file (it is kept in the ledger)")
    with db.begin() as conn:
        row = _locate(conn, ingestion, key)
        _refuse(row, "skip", SKIPPABLE)
        return _finish(
            conn,
            row,
            "skip",
            """
            WITH changed AS (
                UPDATE files SET status = 'SKIPPED', error_type = 'SkippedByOperator',
                    error_message = :note, next_attempt_at = NULL, processed_at = now()
                WHERE id = :id RETURNING id, version, status
            ), recorded AS ("""
            + _RECORD
            + """) SELECT status, version FROM changed""",
            {"actor": _actor(actor), "note": reason[:2000]},
        )


def reingest_file(
    db: Engine, ingestion: Ingestion, key: str | int, *, actor: str, allow_duplicates: bool = False
) -> FileAction:
    """Read a file again as a new version of itself, as if its ETag had changed.

    Under ``--on-change replace`` the commit that ingests the new version deletes the rows of the
    earlier one in the same Iceberg transaction, so the table holds the file once, whatever crashes.
    Under ``append`` the rows would be in the table twice: refused unless ``allow_duplicates``."""
    if ingestion.on_change == "append" and not allow_duplicates:
        raise ConfigurationError(
            f"ingestion {ingestion.name!r} appends changed files (--on-change append): reading a file again "
            "would add its rows a second time; pass --allow-duplicates to do so anyway"
        )
    with db.begin() as conn:
        row = _locate(conn, ingestion, key)
        _refuse(row, "reingest", REINGESTABLE)
        if row["cleanup_status"] == "DONE" and not ingestion.after_ingest.startswith(("tag:", "keep")):
            raise ConflictError(
                f"cannot reingest {row['file_path']}: it was cleaned up from the source "
                f"(--after-ingest {ingestion.after_ingest}); there is nothing left to read"
            )
        # The same fresh version as a changed ETag starts (ledger.upsert_listing_page).
        return _finish(
            conn,
            row,
            "reingest",
            """
            WITH changed AS (
                UPDATE files SET status = 'DISCOVERED', error_message = NULL,"""
            + FRESH_VERSION_SET
            + """
                WHERE id = :id RETURNING id, version, status
            ), recorded AS ("""
            + _RECORD
            + """) SELECT status, version FROM changed""",
            {"actor": _actor(actor), "note": "re-ingest requested"},
        )
