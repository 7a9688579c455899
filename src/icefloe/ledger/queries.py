"""Read-only ledger queries for the CLI, the API, metrics and the worker's bookkeeping."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, text

from icefloe.errors import NotFoundError
from icefloe.ledger.protocol import claimable_condition
from icefloe.models import FILE_STATUSES
from icefloe.redaction import redact_text


def count_claimable(conn: Connection, ingestion_id: int, max_retries: int) -> int:
    """Files a claim could take now (the queue depth)."""
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM files WHERE ingestion_id = :ingestion_id AND "
                + claimable_condition("files", ":max_retries")
            ),
            {"ingestion_id": ingestion_id, "max_retries": max_retries},
        ).scalar_one()
    )


def queue_depths(conn: Connection) -> dict[str, int]:
    """Claimable files per ingestion name (the `icefloe_queue_depth` gauge)."""
    rows = conn.execute(
        text(
            "SELECT i.name, count(f.id) AS n FROM ingestions i "
            "LEFT JOIN files f ON f.ingestion_id = i.id AND "
            + claimable_condition("f", "i.max_retries")
            + " GROUP BY i.name"
        )
    ).all()
    return {r.name: r.n for r in rows}


def run_needing_help(conn: Connection) -> tuple[int, int] | None:
    """(run id, ingestion id) of the oldest RUNNING run of an active ingestion with claimable files."""
    row = conn.execute(
        text(
            "SELECT r.id, r.ingestion_id FROM runs r "
            "JOIN ingestions i ON i.id = r.ingestion_id AND i.status = 'ACTIVE' "
            "WHERE r.status = 'RUNNING' AND NOT r.cancel_requested "
            "AND EXISTS (SELECT 1 FROM files f WHERE f.ingestion_id = r.ingestion_id AND "
            + claimable_condition("f", "i.max_retries")
            + ") ORDER BY r.id LIMIT 1"
        )
    ).first()
    return (row.id, row.ingestion_id) if row is not None else None


def run_in_flight(conn: Connection, ingestion_id: int, run_id: int) -> tuple[int, int]:
    """(live, expired): files claimed for ``run_id`` still PROCESSING, by whether their lease lives."""
    row = conn.execute(
        text(
            "SELECT count(*) FILTER (WHERE lease_expires_at >= now()) AS live, "
            "count(*) FILTER (WHERE lease_expires_at < now()) AS expired "
            "FROM files WHERE ingestion_id = :i AND status = 'PROCESSING' AND run_id = :r"
        ),
        {"i": ingestion_id, "r": run_id},
    ).one()
    return int(row.live), int(row.expired)


def files_by_status(conn: Connection) -> dict[tuple[str, str], int]:
    """(ingestion name, status) → files, for every ingestion."""
    rows = conn.execute(
        text(
            "SELECT i.name, f.status, count(*) AS n FROM files f JOIN ingestions i ON i.id = f.ingestion_id "
            "GROUP BY i.name, f.status"
        )
    ).all()
    return {(r.name, r.status): r.n for r in rows}


def status_counts(conn: Connection, ingestion_id: int) -> dict[str, int]:
    rows = conn.execute(
        text("SELECT status, count(*) AS n FROM files WHERE ingestion_id = :i GROUP BY status"),
        {"i": ingestion_id},
    ).all()
    return {r.status: r.n for r in rows}


# next_attempt_at is 'infinity' for a file waiting for its next discovery (changed after listing);
# psycopg cannot load that into a datetime, so it reads as NULL (its error_type says why it waits).
_FILE_COLUMNS = """
    id, file_path, status, size, etag, version, modified_at, discovered_at, started_at,
    processed_at, records_ingested, records_rejected, bytes_read, processing_duration_ms, error_type,
    error_message, retry_count, nullif(next_attempt_at, 'infinity') AS next_attempt_at,
    lease_owner, lease_expires_at, snapshot_id, run_id, cleanup_status, cleanup_at, cleanup_error
"""


def list_files(
    conn: Connection,
    ingestion_id: int,
    *,
    status: str | None = None,
    path: str | None = None,
    limit: int = 1000,
    path_prefix: str | None = None,
    after_id: int | None = None,
    modified_since: dt.datetime | None = None,
    modified_until: dt.datetime | None = None,
    processed_since: dt.datetime | None = None,
    processed_until: dt.datetime | None = None,
) -> list[dict[str, object]]:
    """The ledger of one ingestion in id order (`icefloe files`, `GET /ingestions/{id}/files`).

    ``after_id`` pages through it by keyset: ids only grow, so a page boundary stays correct while
    discovery adds files (they come after it) and a file listed once is never listed again. Time
    bounds are half-open: ``since <= t < until``.
    """
    rows = conn.execute(
        text(
            f"""
            SELECT {_FILE_COLUMNS}
            FROM files
            WHERE ingestion_id = :i AND (CAST(:status AS text) IS NULL OR status = :status)
              AND (CAST(:path AS text) IS NULL OR file_path = :path)
              AND (CAST(:prefix AS text) IS NULL OR starts_with(file_path, :prefix))
              AND id > coalesce(CAST(:after_id AS bigint), 0)
              AND (CAST(:m_since AS timestamptz) IS NULL OR modified_at >= :m_since)
              AND (CAST(:m_until AS timestamptz) IS NULL OR modified_at < :m_until)
              AND (CAST(:p_since AS timestamptz) IS NULL OR processed_at >= :p_since)
              AND (CAST(:p_until AS timestamptz) IS NULL OR processed_at < :p_until)
            ORDER BY id LIMIT :limit
            """
        ),
        {
            "i": ingestion_id,
            "status": status,
            "path": path,
            "prefix": path_prefix,
            "after_id": after_id,
            "m_since": modified_since,
            "m_until": modified_until,
            "p_since": processed_since,
            "p_until": processed_until,
            "limit": limit,
        },
    ).mappings()
    return [_shown(r) for r in rows]


def _shown(row: Any) -> dict[str, object]:
    """A ledger row as shown: its error text masked again (rows stored before masking existed)."""
    shown = dict(row)
    if isinstance(shown.get("error_message"), str):
        shown["error_message"] = redact_text(shown["error_message"])
    return shown


def get_file(conn: Connection, ingestion_id: int, file_id: int) -> dict[str, object]:
    """One file of an ingestion's ledger (the columns of :func:`list_files`)."""
    row = (
        conn.execute(
            text(f"SELECT {_FILE_COLUMNS} FROM files WHERE ingestion_id = :i AND id = :id"),
            {"i": ingestion_id, "id": file_id},
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFoundError(f"no file {file_id} in this ingestion")
    return _shown(row)


def attempts(conn: Connection, file_id: int) -> list[dict[str, object]]:
    """The attempt history of one file (every version), oldest first."""
    rows = conn.execute(
        text(
            "SELECT version, run_id, batch_id, worker_id, status, error_type, error_message, recorded_at "
            "FROM file_attempts WHERE file_id = :f ORDER BY id"
        ),
        {"f": file_id},
    ).mappings()
    return [_shown(r) for r in rows]


def find_file(conn: Connection, ingestion_id: int, paths: list[str]) -> dict[str, object] | None:
    """The ledger row of the first of ``paths`` the ingestion has seen, or None."""
    for path in paths:
        rows = list_files(conn, ingestion_id, path=path, limit=1)
        if rows:
            return rows[0]
    return None


def retry_backlog(conn: Connection, ingestion_id: int, max_retries: int) -> tuple[int, dt.datetime | None]:
    """FAILED files with attempts left that wait out their backoff: (how many, when the first is due)."""
    row = conn.execute(
        text(
            """
            SELECT count(*) AS n, min(next_attempt_at) AS due FROM files
            WHERE ingestion_id = :i AND status = 'FAILED' AND retry_count < :max_retries
              AND next_attempt_at > now() AND next_attempt_at < 'infinity'
            """
        ),
        {"i": ingestion_id, "max_retries": max_retries},
    ).one()
    return int(row.n), row.due


def empty_files_of_run(conn: Connection, ingestion_id: int, run_id: int, limit: int = 5) -> tuple[int, list[str]]:
    """Files a run ingested as SUCCESS with 0 records: (how many, the first few paths)."""
    rows = conn.execute(
        text(
            "SELECT file_path, count(*) OVER () AS n FROM files WHERE ingestion_id = :i AND run_id = :r "
            "AND status = 'SUCCESS' AND records_ingested = 0 ORDER BY id LIMIT :limit"
        ),
        {"i": ingestion_id, "r": run_id, "limit": limit},
    ).all()
    return (int(rows[0].n) if rows else 0), [str(r.file_path) for r in rows]


# --------------------------------------------------------------------------------------------------
# the dashboard's overview: every ingestion at once, each query one pass over an index


# Listed (not NOT IN the terminal ones): the planner reads only these rows of the status index.
_NOT_INGESTED = ", ".join(f"'{s}'" for s in FILE_STATUSES if s not in ("SUCCESS", "SKIPPED"))


def lag_by_ingestion(conn: Connection) -> dict[int, dt.timedelta]:
    """Ingestion id → age of its oldest file not yet ingested (any status but SUCCESS and SKIPPED),
    by the database clock; ingestions with nothing waiting are absent."""
    rows = conn.execute(
        text(
            "SELECT ingestion_id, now() - min(discovered_at) AS lag FROM files "
            f"WHERE status IN ({_NOT_INGESTED}) GROUP BY ingestion_id"
        )
    ).all()
    return {r.ingestion_id: r.lag for r in rows}


def status_counts_by_ingestion(conn: Connection) -> dict[int, dict[str, int]]:
    """Ingestion id → files by status (one index-only pass over ``ix_files_ingestion_status``)."""
    out: dict[int, dict[str, int]] = {}
    rows = conn.execute(text("SELECT ingestion_id, status, count(*) AS n FROM files GROUP BY ingestion_id, status"))
    for r in rows:
        out.setdefault(r.ingestion_id, {})[r.status] = r.n
    return out


def last_runs(conn: Connection) -> dict[int, dict[str, Any]]:
    """Ingestion id → its latest run (status, started_at, finished_at, duration_seconds)."""
    rows = conn.execute(
        text(
            "SELECT DISTINCT ON (ingestion_id) ingestion_id, id, status, started_at, finished_at, "
            "extract(epoch FROM finished_at - started_at) AS duration_seconds "
            "FROM runs ORDER BY ingestion_id, id DESC"
        )
    ).mappings()
    return {r["ingestion_id"]: dict(r) for r in rows}


def hourly_totals(conn: Connection, *, hours: int = 24) -> dict[int, list[tuple[dt.datetime, int, int]]]:
    """Ingestion id → (hour, bytes read, records ingested) of the runs finished in the last
    ``hours`` hours, oldest first; hours without a finished run are absent."""
    rows = conn.execute(
        text(
            "SELECT ingestion_id, date_trunc('hour', finished_at) AS hour, sum(bytes_read) AS bytes, "
            "sum(records_ingested) AS records FROM runs "
            "WHERE finished_at >= now() - make_interval(hours => :hours) "
            "GROUP BY ingestion_id, hour ORDER BY ingestion_id, hour"
        ),
        {"hours": hours},
    )
    out: dict[int, list[tuple[dt.datetime, int, int]]] = {}
    for r in rows:
        out.setdefault(r.ingestion_id, []).append((r.hour, int(r.bytes), int(r.records)))
    return out


def recent_alerts_by_ingestion(conn: Connection, *, hours: int = 24) -> dict[int, list[dict[str, Any]]]:
    """Ingestion id → its alerts raised in the last ``hours`` hours, newest first."""
    rows = conn.execute(
        text(
            "SELECT ingestion_id, kind, subject, created_at FROM alerts "
            "WHERE ingestion_id IS NOT NULL AND created_at >= now() - make_interval(hours => :hours) "
            "ORDER BY id DESC"
        ),
        {"hours": hours},
    ).mappings()
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["ingestion_id"], []).append(dict(r))
    return out
