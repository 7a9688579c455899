"""The SQL of the exactly-once protocol (DESIGN.md), each statement with the invariant it keeps.

Who owns a file, whether a file is done, what a crash leaves behind: every statement that decides
these lives here. Callers own the transaction (``with db.begin() as conn``) so that the commit
protocol can hold the per-table lock across the fencing check, the Iceberg commit and the SUCCESS
update. Every time decision uses the database clock, ``now()``.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from icefloe.errors import TableBusyError
from icefloe.ledger.listing import ADVANCE_WATERMARK_SQL
from icefloe.ledger.records import (
    Batch,
    ClaimedFile,
    ExpiredFile,
    FileOutcome,
    ListedObject,
    LockBounds,
    PageCounts,
)
from icefloe.redaction import redact_optional, redact_text
from icefloe.retry import FILE_RETRY

# --------------------------------------------------------------------------- discovery

# A new version of a file starts with no attempt behind it: retries, counters, lease, batches,
# snapshot and clean-up reset, ``lease_token`` bumped (fencing off a worker still holding the old
# version). One list for every way a version starts (a changed ETag, ``files reingest``).
FRESH_VERSION_SET = """
            version = files.version + 1, discovered_at = now(),
            started_at = NULL, processed_at = NULL, records_ingested = NULL, records_rejected = NULL,
            bytes_read = NULL,
            processing_duration_ms = NULL, error_type = NULL, retry_count = 0, next_attempt_at = NULL,
            lease_owner = NULL, lease_expires_at = NULL, lease_token = files.lease_token + 1,
            batch_id = NULL, batch_ids = '{}', first_claimed_at = NULL, snapshot_id = NULL,
            cleanup_status = NULL, cleanup_at = NULL, cleanup_error = NULL"""

# What a changed ETag does to a known row (``ON CONFLICT … DO UPDATE SET``): the listed object's
# size, time and ETag, DISCOVERED (or SKIPPED) again, as a fresh version.
NEW_VERSION_SET = (
    """
            size = EXCLUDED.size, modified_at = EXCLUDED.modified_at, etag = EXCLUDED.etag,
            status = EXCLUDED.status, error_message = EXCLUDED.error_message,"""
    + FRESH_VERSION_SET
)

_UPSERT_PAGE = text(
    """
    WITH page AS (
        -- One JSON text for the page: building it is C work (json.dumps), five typed arrays cost
        -- psycopg Python work per element, on the thread that competes with the listing for the GIL.
        SELECT e->>0 AS file_path, CAST(e->>1 AS bigint) AS size, CAST(e->>2 AS timestamptz) AS modified_at,
               e->>3 AS etag, e->>4 AS skip_reason
        FROM json_array_elements(CAST(:page AS json)) AS e
    ), changed AS (
        -- Known keys with an unchanged ETag are dropped by a read: through ON CONFLICT DO UPDATE
        -- each would be locked (a heap write) even though its WHERE is false.
        SELECT page.* FROM page
        LEFT JOIN files f ON f.ingestion_id = :ingestion_id AND f.file_path = page.file_path
        WHERE f.etag IS DISTINCT FROM page.etag
    ), upserted AS (
        INSERT INTO files (ingestion_id, file_path, size, modified_at, etag, status, error_message)
        SELECT :ingestion_id, file_path, size, modified_at, etag,
               CASE WHEN skip_reason IS NULL THEN 'DISCOVERED' ELSE 'SKIPPED' END, skip_reason
        FROM changed
        ON CONFLICT (ingestion_id, file_path) DO UPDATE SET
"""
    + NEW_VERSION_SET
    + """
        WHERE files.etag IS DISTINCT FROM EXCLUDED.etag
        RETURNING (xmax = 0) AS inserted, status, file_path, modified_at
    ), watermark AS ("""
    + ADVANCE_WATERMARK_SQL
    + """
    )
    SELECT count(*) FILTER (WHERE inserted AND status <> 'SKIPPED') AS new,
           count(*) FILTER (WHERE NOT inserted AND status <> 'SKIPPED') AS changed,
           count(*) FILTER (WHERE status = 'SKIPPED') AS skipped,
           -- byte order, as S3 lists keys
           count(*) FILTER (WHERE status <> 'SKIPPED' AND file_path COLLATE "C" <= CAST(:missed_below AS text))
               AS missed,
           count(*) FILTER (WHERE status <> 'SKIPPED' AND modified_at < CAST(:missed_before AS timestamptz))
               AS missed_by_events
    FROM upserted
    """
)


def upsert_listing_page(
    conn: Connection,
    ingestion_id: int,
    page: Sequence[ListedObject],
    *,
    missed_below: str | None = None,
    missed_before: dt.datetime | None = None,
    watermark: tuple[str, str | None] = ("", None),
) -> PageCounts:
    """Record one listing page in a single statement; the new/changed diff is computed by PostgreSQL.

    Invariant: a known key with an unchanged ETag is not touched (never read twice); a changed
    ETag starts a new version: DISCOVERED again, retries reset, and ``lease_token`` bumped so a
    worker still holding the old version is fenced off and commits nothing for it.
    ``missed_below`` (a file URI): new or changed files at or below it are counted as ``missed``;
    ``missed_before``: new or changed files modified before it are counted as ``missed_by_events``.
    ``watermark`` (root, key): the same statement advances the root's watermark to the page's last
    key (:func:`icefloe.ledger.advance_watermark`), so it never passes a key not recorded.
    """
    root, last_key = watermark
    if not page and last_key is None:
        return PageCounts(0, 0, 0)
    row = conn.execute(
        _UPSERT_PAGE,
        {
            "ingestion_id": ingestion_id,
            "page": json.dumps(
                [
                    (o.file_path, o.size, o.modified_at.isoformat() if o.modified_at else None, o.etag, o.skip_reason)
                    for o in page
                ]
            ),
            "missed_below": missed_below,
            "missed_before": missed_before,
            "root": root,
            "watermark": last_key,
        },
    ).one()
    return PageCounts(
        new=row.new, changed=row.changed, skipped=row.skipped, missed=row.missed, missed_by_events=row.missed_by_events
    )


# --------------------------------------------------------------------------- claim


# Statements that join a batch's files to unnest(:ids, …) and have no selective predicate of their
# own also say files.id = ANY(:ids): the planner cannot see into unnest, and hashed the whole files
# table instead (a seq scan that grew with the ledger: at 100,000 files 46 ms a commit, 0.5 s a
# heartbeat). The fencing check keeps its status = 'PROCESSING' (the partial index): with the id
# predicate added as well, benchmarks/bookkeeping.py's commits took 22 s instead of 5.5 s.


def int_array(values: Iterable[int]) -> str:
    """A PostgreSQL array literal (``{1,2,3}``) for ``CAST(:p AS bigint[])``: psycopg dumps a list
    element by element in Python, 0.25 s of the claims and commits of 15,000 files (cProfile)."""
    return "{" + ",".join(map(str, values)) + "}"


def claimable_condition(f: str, max_retries: str) -> str:
    """SQL predicate: row ``f`` of files can be claimed now (the one definition of "claimable")."""
    return (
        f"(({f}.status = 'DISCOVERED' AND ({f}.next_attempt_at IS NULL OR {f}.next_attempt_at <= now())) "
        f"OR ({f}.status = 'FAILED' AND {f}.retry_count < {max_retries} AND {f}.next_attempt_at <= now()))"
    )


_CLAIM = text(
    """
    WITH locked AS (
        SELECT id, size FROM files
        WHERE ingestion_id = :ingestion_id AND """
    + claimable_condition("files", ":max_retries")
    + """
        ORDER BY id
        LIMIT :max_files
        FOR UPDATE SKIP LOCKED
    ), picked AS (
        -- Pack by bytes: keep files while the running total before each stays under the budget
        -- (so one file larger than the budget still forms a batch of its own).
        SELECT id FROM (
            SELECT id, sum(size) OVER (ORDER BY id) - size AS bytes_before FROM locked
        ) s WHERE bytes_before < :max_bytes
    )
    UPDATE files f SET
        status = 'PROCESSING', lease_owner = :owner,
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        lease_token = f.lease_token + 1, batch_id = :batch_id,
        batch_ids = array_append(f.batch_ids, CAST(:batch_id AS uuid)),
        first_claimed_at = coalesce(f.first_claimed_at, now()),
        started_at = now(), run_id = :run_id
    FROM picked WHERE f.id = picked.id
    RETURNING f.id, f.file_path, f.size, f.etag, f.version, f.lease_token, f.retry_count,
              f.batch_ids, f.first_claimed_at
    """
)


def claim_batch(
    conn: Connection,
    *,
    ingestion_id: int,
    run_id: int | None,
    owner: str,
    lease_seconds: int,
    max_files: int,
    max_bytes: int,
    max_retries: int,
) -> Batch | None:
    """Claim up to ``max_files``/``max_bytes`` claimable files in one statement.

    Invariant: a row is claimed by one worker at a time (``FOR UPDATE SKIP LOCKED``); each claim
    bumps ``lease_token`` (the fencing token) and appends a fresh batch id to ``batch_ids``, which
    keeps every batch that ever held this version until it is SUCCESS. The caller commits at
    once: no transaction stays open while files are read.
    """
    batch_id = uuid.uuid4()
    rows = conn.execute(
        _CLAIM,
        {
            "ingestion_id": ingestion_id,
            "run_id": run_id,
            "owner": owner,
            "lease_seconds": lease_seconds,
            "max_files": max_files,
            "max_bytes": max_bytes,
            "max_retries": max_retries,
            "batch_id": batch_id,
        },
    ).all()
    if not rows:
        return None
    # Positional, in RETURNING's order (named access on 1,000 rows cost 14 µs a row).
    files = tuple(
        sorted(
            (
                ClaimedFile(id_, path, size, etag, version, token, retries, tuple(batch_ids), first_claimed)
                for id_, path, size, etag, version, token, retries, batch_ids, first_claimed in rows
            ),
            key=lambda f: f.id,
        )
    )
    return Batch(batch_id=batch_id, files=files)


def heartbeat(conn: Connection, batch: Batch, lease_seconds: int) -> int:
    """Extend the lease of the files of ``batch`` still PROCESSING; returns how many are still ours.

    A file is ours while its fencing token is unchanged, whatever this worker already made of it
    (SUCCESS, FAILED, released): every takeover bumps the token. Fewer than ``len(batch.files)``
    means the lease was lost for some: stop work on the batch.
    """
    return int(
        conn.execute(
            text(
                """
                WITH mine AS (
                    SELECT files.id, files.status FROM files
                    JOIN unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS t(id, token)
                      ON files.id = t.id AND files.lease_token = t.token
                    WHERE files.id = ANY(CAST(:ids AS bigint[]))
                ), extended AS (
                    UPDATE files SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
                    -- by id from an array: joined to the CTE, the planner (expecting one row)
                    -- compared 1,000 x 1,000 rows
                    WHERE files.id = ANY(ARRAY(SELECT id FROM mine WHERE status = 'PROCESSING'))
                      -- re-checked on the row as committed meanwhile: a heartbeat that waited on
                      -- the batch's own SUCCESS update must not put a lease back on its files
                      AND files.status = 'PROCESSING'
                )
                SELECT count(*) FROM mine
                """
            ),
            {
                "lease_seconds": lease_seconds,
                "ids": int_array(f.id for f in batch.files),
                "tokens": int_array(f.lease_token for f in batch.files),
            },
        ).scalar_one()
    )


# --------------------------------------------------------------------------- commit


def lock_table(conn: Connection, table_identifier: str, bounds: LockBounds | None = None) -> None:
    """Take the per-table lock for the rest of the transaction.

    Serialises commit-protocol steps (fencing check + snapshot search + commit + SUCCESS update,
    and reconciliation) of all icefloe processes writing one table.

    With ``bounds`` neither side can stall the table: the wait for the lock gives up after
    ``bounds.wait_seconds`` (:class:`TableBusyError`: retry), and PostgreSQL ends this session if it
    stays idle in the transaction, or runs one statement, longer than ``bounds.hold_seconds`` — a
    holder frozen by SIGSTOP, a GC pause or a partition loses the lock, not the table.
    """
    if bounds is not None:
        # SET LOCAL: the bounds end with this transaction, the pooled connection keeps its defaults.
        conn.execute(text(f"SET LOCAL lock_timeout = {int(bounds.wait_seconds * 1000)}"))
        conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {int(bounds.hold_seconds * 1000)}"))
        conn.execute(text(f"SET LOCAL statement_timeout = {int(bounds.hold_seconds * 1000)}"))
    try:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:t, 0))"), {"t": table_identifier})
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise TableBusyError(f"{table_identifier}: another worker holds the table's commit lock") from exc
        raise


def files_still_owned(conn: Connection, files: Iterable[ClaimedFile]) -> set[int]:
    """Ids of the given file versions whose fencing token is still ours (locks the rows)."""
    files = list(files)
    rows = conn.execute(
        text(
            """
            SELECT files.id FROM files
            JOIN unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS t(id, token)
              ON files.id = t.id AND files.lease_token = t.token AND files.status = 'PROCESSING'
            FOR UPDATE OF files
            """
        ),
        {"ids": int_array(f.id for f in files), "tokens": int_array(f.lease_token for f in files)},
    ).all()
    return {r.id for r in rows}


# Every UPDATE that ends an attempt records it in file_attempts (the history `icefloe files --history`
# shows): wrapped as  WITH changed AS (UPDATE … RETURNING …) INSERT INTO file_attempts … .
_RECORD_ATTEMPTS = """
    INSERT INTO file_attempts (file_id, version, run_id, batch_id, worker_id, status, error_type, error_message)
    SELECT id, version, run_id, CAST(:attempt_batch AS uuid), lease_owner, status, error_type, error_message
    FROM changed
"""
_RETURNING = (
    "RETURNING files.id, files.version, files.run_id, files.lease_owner, files.status, files.error_type, "
    "files.error_message"
)


def mark_succeeded(
    conn: Connection, outcomes: Sequence[FileOutcome], snapshot_id: int | None, batch_id: uuid.UUID | None = None
) -> int:
    """SUCCESS with the snapshot that holds the rows; fenced on ``lease_token``. Returns rows updated."""
    if not outcomes:
        return 0
    result = conn.execute(
        text(
            """
            WITH changed AS (
            UPDATE files SET status = 'SUCCESS', processed_at = now(), snapshot_id = :snapshot_id,
                records_ingested = t.records, records_rejected = t.rejected, bytes_read = t.bytes_read,
                processing_duration_ms = t.duration_ms, error_type = NULL, error_message = NULL,
                next_attempt_at = NULL, lease_expires_at = NULL,
                batch_id = NULL, batch_ids = '{}'
            FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[]), CAST(:records AS bigint[]),
                        CAST(:bytes AS bigint[]), CAST(:durations AS integer[]), CAST(:rejected AS bigint[]))
                 AS t(id, token, records, bytes_read, duration_ms, rejected)
            WHERE files.id = t.id AND files.lease_token = t.token
              AND files.id = ANY(CAST(:ids AS bigint[]))
            """
            + _RETURNING
            + ")"
            + _RECORD_ATTEMPTS
        ),
        {
            "attempt_batch": batch_id,
            "snapshot_id": snapshot_id,
            "ids": int_array(o.file.id for o in outcomes),
            "tokens": int_array(o.file.lease_token for o in outcomes),
            "records": int_array(o.records for o in outcomes),
            "bytes": int_array(o.bytes_read for o in outcomes),
            "durations": int_array(o.duration_ms for o in outcomes),
            "rejected": int_array(o.rejected for o in outcomes),
        },
    )
    return result.rowcount


def mark_failed(
    conn: Connection,
    file: ClaimedFile,
    batch_id: uuid.UUID,
    *,
    error_type: str,
    error_message: str,
    bytes_read: int = 0,
    duration_ms: int = 0,
) -> bool:
    """FAILED with the error, one more attempt counted and the next attempt time set.

    Invariant: the failed file's rows are in none of this batch's data files, so this batch id
    is removed from its ``batch_ids``: the snapshot search must not mistake the commit of the
    batch's other files for this file's.
    """
    backoff = FILE_RETRY.delay(file.retry_count + 1)
    result = conn.execute(
        text(
            """
            WITH changed AS (
            UPDATE files SET status = 'FAILED', error_type = :error_type, error_message = :error_message,
                retry_count = retry_count + 1, processed_at = now(), bytes_read = :bytes_read,
                processing_duration_ms = :duration_ms,
                next_attempt_at = now() + make_interval(secs => :backoff),
                lease_expires_at = NULL, batch_id = NULL,
                batch_ids = array_remove(batch_ids, CAST(:batch_id AS uuid))
            WHERE id = :id AND lease_token = :token
            """
            + _RETURNING
            + ")"
            + _RECORD_ATTEMPTS
        ),
        {
            "attempt_batch": batch_id,
            "id": file.id,
            "token": file.lease_token,
            "error_type": error_type[:100],
            "error_message": redact_text(error_message)[:4000],  # never a presigned URL
            "bytes_read": bytes_read,
            "duration_ms": duration_ms,
            "backoff": backoff,
            "batch_id": batch_id,
        },
    )
    return result.rowcount == 1


def release(
    conn: Connection,
    files: Iterable[ClaimedFile],
    batch_id: uuid.UUID,
    *,
    wait_for_rediscovery: bool = False,
    reason: str | None = None,
) -> int:
    """Give file versions back without counting an attempt (their rows are not in any commit).

    ``wait_for_rediscovery``: the object changed after listing (HTTP 412); it stays DISCOVERED but
    is not claimable until the next discovery records its new ETag as a new version.
    """
    files = list(files)
    reason = redact_optional(reason)
    if not files:
        return 0
    result = conn.execute(
        text(
            """
            UPDATE files SET status = 'DISCOVERED', lease_owner = NULL, lease_expires_at = NULL,
                batch_id = NULL, batch_ids = array_remove(batch_ids, CAST(:batch_id AS uuid)),
                next_attempt_at = CASE WHEN :wait THEN 'infinity'::timestamptz ELSE NULL END,
                error_type = CASE WHEN :wait THEN 'ObjectChanged' ELSE error_type END,
                error_message = coalesce(:reason, error_message)
            FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS t(id, token)
            WHERE files.id = t.id AND files.lease_token = t.token
              AND files.id = ANY(CAST(:ids AS bigint[]))
            """
        ),
        {
            "batch_id": batch_id,
            "wait": wait_for_rediscovery,
            "reason": reason,
            "ids": int_array(f.id for f in files),
            "tokens": int_array(f.lease_token for f in files),
        },
    )
    return result.rowcount


# --------------------------------------------------------------------------- reconcile


def any_expired_lease(conn: Connection, ingestion_id: int) -> bool:
    """Whether any PROCESSING file of the ingestion has an expired lease (a cheap probe, no lock)."""
    row = conn.execute(
        text(
            "SELECT 1 FROM files WHERE ingestion_id = :i AND status = 'PROCESSING' AND lease_expires_at < now() LIMIT 1"
        ),
        {"i": ingestion_id},
    ).first()
    return row is not None


def lock_expired_leases(conn: Connection, ingestion_id: int) -> list[ExpiredFile]:
    """PROCESSING rows whose lease expired (by the database clock), locked for reconciliation.

    Call under :func:`lock_table`, so no live worker can be between its fencing check and its
    ledger update for these rows while they are reconciled.
    """
    rows = conn.execute(
        text(
            """
            SELECT id, file_path, lease_token, retry_count, batch_ids, first_claimed_at, run_id FROM files
            WHERE ingestion_id = :ingestion_id AND status = 'PROCESSING' AND lease_expires_at < now()
            ORDER BY id
            FOR UPDATE SKIP LOCKED
            """
        ),
        {"ingestion_id": ingestion_id},
    ).all()
    return [
        ExpiredFile(r.id, r.file_path, r.lease_token, r.retry_count, tuple(r.batch_ids), r.first_claimed_at, r.run_id)
        for r in rows
    ]


def reconcile_committed(conn: Connection, files: Sequence[ExpiredFile], snapshot_ids: Sequence[int]) -> int:
    """Expired leases whose batch is in a snapshot: the worker died after its commit landed."""
    if not files:
        return 0
    return conn.execute(
        text(
            """
            WITH changed AS (
            UPDATE files SET status = 'SUCCESS', processed_at = now(), snapshot_id = t.snapshot_id,
                lease_expires_at = NULL, lease_token = files.lease_token + 1,
                batch_id = NULL, batch_ids = '{}', error_type = NULL,
                error_message = 'committed by a worker that stopped before recording it; found in the snapshots'
            FROM unnest(CAST(:ids AS bigint[]), CAST(:snapshots AS bigint[])) AS t(id, snapshot_id)
            WHERE files.id = t.id AND files.id = ANY(CAST(:ids AS bigint[]))
            """
            + _RETURNING
            + ")"
            + _RECORD_ATTEMPTS
        ),
        {"ids": int_array(f.id for f in files), "snapshots": int_array(snapshot_ids), "attempt_batch": None},
    ).rowcount


def reconcile_lost(
    conn: Connection, files: Sequence[ExpiredFile], max_retries: int, *, run_id: int | None = None
) -> int:
    """Expired leases whose batch is in no snapshot: claimable again, the crash counting as an attempt.

    Bumping ``lease_token`` fences the old owner in case it is only paused, not dead. A file that
    keeps killing workers ends FAILED (``WorkerLost``) instead of looping, in ``run_id`` (the
    reconciling run, which reports it) when given.
    """
    if not files:
        return 0
    return conn.execute(
        text(
            """
            WITH changed AS (
            UPDATE files SET
                status = CASE WHEN retry_count + 1 >= :max_retries THEN 'FAILED' ELSE 'DISCOVERED' END,
                run_id = CASE WHEN retry_count + 1 >= :max_retries
                    THEN coalesce(CAST(:run_id AS bigint), run_id) ELSE run_id END,
                retry_count = retry_count + 1, lease_expires_at = NULL,
                lease_token = lease_token + 1, batch_id = NULL, next_attempt_at = NULL,
                error_type = 'WorkerLost',
                error_message = 'the worker processing this file stopped before committing it'
            WHERE id = ANY(CAST(:ids AS bigint[]))
            """
            + _RETURNING
            + ")"
            + _RECORD_ATTEMPTS
        ),
        {"ids": [f.id for f in files], "max_retries": max_retries, "attempt_batch": None, "run_id": run_id},
    ).rowcount


# --------------------------------------------------------------------------- retries & queries


def make_retryable(conn: Connection, ingestion_id: int, file_path: str | None = None) -> int:
    """Make FAILED files claimable now (``icefloe retry``), giving them a fresh retry budget."""
    return conn.execute(
        text(
            """
            UPDATE files SET status = 'DISCOVERED', retry_count = 0, next_attempt_at = NULL
            WHERE ingestion_id = :ingestion_id AND status = 'FAILED'
              AND (CAST(:path AS text) IS NULL OR file_path = :path)
            """
        ),
        {"ingestion_id": ingestion_id, "path": file_path},
    ).rowcount
