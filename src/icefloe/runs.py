"""Run records: one per execution of an ingestion, with its counters."""

from __future__ import annotations

import datetime as dt
from typing import Any, overload

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session

from icefloe.errors import ConflictError, NotFoundError, RunInProgressError
from icefloe.models import Ingestion, Run
from icefloe.redaction import redact_optional

COUNTERS = (
    "files_discovered",
    "files_new",
    "files_changed",
    "files_succeeded",
    "files_failed",
    "files_skipped",
    "records_ingested",
    "records_rejected",
    "bytes_read",
    "snapshots_committed",
    "list_requests",
    "files_missed_by_incremental",
    "event_messages",
    "files_missed_by_events",
)


def start(db: Engine, ingestion_id: int, *, trigger: str, worker_id: str, full_listing: bool = False) -> Run:
    """A new run, RUNNING from now; ``full_listing``: list the whole source whatever the listing mode."""
    with Session(db, expire_on_commit=False) as session:
        run = Run(
            ingestion_id=ingestion_id,
            trigger=trigger,
            status="RUNNING",
            worker_id=worker_id,
            started_at=func.now(),
            listing="full" if full_listing else None,
        )
        session.add(run)
        session.commit()
        session.refresh(run)
        return run


def add(db: Engine, run_id: int, **increments: int) -> None:
    """Add to a run's counters (atomic, so concurrent workers of one run can share it)."""
    values = {name: getattr(Run, name) + n for name, n in increments.items() if n}
    if values:
        with db.begin() as conn:
            conn.execute(update(Run).where(Run.id == run_id).values(**values))


def set_listing(db: Engine, run_id: int, listing: str | None, *, discovery: str = "listing") -> None:
    """Record how the run discovered ("listing" or "events") and listed: "full", "incremental" or
    None (an events run that did not list)."""
    with db.begin() as conn:
        conn.execute(update(Run).where(Run.id == run_id).values(listing=listing, discovery=discovery))


def finish(
    db: Engine, run_id: int, *, status: str, error_message: str | None = None, worker_id: str | None = None
) -> Run:
    """End a run. With ``worker_id``, only while that worker still executes it (a run another
    worker took over is left to that worker); returns the run as it stands."""
    guard = (Run.worker_id == worker_id, Run.status == "RUNNING") if worker_id is not None else ()
    with Session(db, expire_on_commit=False) as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id, *guard)
            .values(status=status, error_message=redact_optional(error_message), finished_at=func.now())
        )
        session.commit()
        run = session.get(Run, run_id)
        return run if run is not None else deleted_run(run_id)


def deleted_run(run_id: int) -> Run:
    """What is left to say of a run whose ingestion was deleted while it ran (its row went with
    the ledger): FAILED, with why; not stored anywhere."""
    return Run(
        id=run_id,
        status="FAILED",
        error_message=(
            f"the ingestion was deleted while run {run_id} ran: its ledger is gone "
            "(what the run committed before stays in the table)"
        ),
        **dict.fromkeys(COUNTERS, 0),
    )


def exists(db: Engine, run_id: int) -> bool:
    with db.connect() as conn:
        return conn.execute(text("SELECT 1 FROM runs WHERE id = :id"), {"id": run_id}).first() is not None


def settle(db: Engine, ingestion_id: int, run_id: int, *, worker_id: str) -> Run:
    """End a run whose batches are done, with the status the ledger supports.

    SUCCESS only when no file claimed for the run is FAILED or still PROCESSING: a file still
    leased (a helper that stopped answering, a batch lost with a crashed process) is not done,
    and the run says so (PARTIAL, with how many) instead of claiming success.
    """
    failed = count_failed_files(db, ingestion_id, run_id)
    with db.connect() as conn:
        processing = conn.execute(
            text("SELECT count(*) FROM files WHERE ingestion_id = :i AND run_id = :r AND status = 'PROCESSING'"),
            {"i": ingestion_id, "r": run_id},
        ).scalar_one()
    if not failed and not processing:
        return finish(db, run_id, status="SUCCESS", worker_id=worker_id)
    message = None
    if processing:
        message = (
            f"{processing} file(s) claimed by this run are still PROCESSING (their worker stopped "
            "answering or died): they are reconciled once their lease expires"
        )
    return finish(db, run_id, status="PARTIAL", error_message=message, worker_id=worker_id)


def count_failed_files(db: Engine, ingestion_id: int, run_id: int) -> int:
    """Set the run's ``files_failed`` to the files it leaves FAILED and return it: a file that
    failed twice in the run counts once, one that failed and then succeeded on retry not at all,
    one a dead worker left (``WorkerLost``) does."""
    with db.begin() as conn:
        return int(
            conn.execute(
                text(
                    "UPDATE runs SET files_failed = (SELECT count(*) FROM files WHERE ingestion_id = :i "
                    "AND status = 'FAILED' AND run_id = :r) WHERE id = :r RETURNING files_failed"
                ),
                {"i": ingestion_id, "r": run_id},
            ).scalar_one()
        )


def get(db: Engine, run_id: int) -> Run:
    with Session(db, expire_on_commit=False) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        return run


def list_for(db: Engine, ingestion_id: int, limit: int = 50) -> list[Run]:
    with Session(db, expire_on_commit=False) as session:
        stmt = select(Run).where(Run.ingestion_id == ingestion_id).order_by(Run.id.desc()).limit(limit)
        return list(session.scalars(stmt))


def summary(run: Run, ingestion_name: str) -> dict[str, Any]:
    """The run as `icefloe run --json` prints it (DESIGN.md's public contract)."""
    duration = (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else None
    return {
        "run_id": run.id,
        "ingestion": ingestion_name,
        "status": run.status,
        "discovery": run.discovery,
        "listing": run.listing,
        **{name: getattr(run, name) for name in COUNTERS},
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "error_message": run.error_message,
    }


@overload
def enqueue(
    db: Engine, ingestion: Ingestion, *, trigger: str, scheduled_for: None = None, full_listing: bool = False
) -> Run: ...
@overload
def enqueue(
    db: Engine, ingestion: Ingestion, *, trigger: str, scheduled_for: dt.datetime, full_listing: bool = False
) -> Run | None: ...
def enqueue(
    db: Engine,
    ingestion: Ingestion,
    *,
    trigger: str,
    scheduled_for: dt.datetime | None = None,
    full_listing: bool = False,
) -> Run | None:
    """Queue a PENDING run for the workers (`icefloe run --enqueue`, the API, schedules);
    ``full_listing``: the run lists the whole source whatever the listing mode.

    The one place a run is created for the queue: a per-ingestion advisory lock serialises the
    in-progress check with the insert, so two enqueues (or two workers' schedulers) cannot both
    see "not busy". Refused with :class:`RunInProgressError` when the ingestion has a PENDING or
    RUNNING run and does not allow concurrent runs. With ``scheduled_for`` (a schedule's fire
    time) the unique key (ingestion, scheduled_for) makes it one run per fire: None when that fire
    was queued already.
    """
    with db.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('run:' || :i, 0))"), {"i": ingestion.id})
        if not ingestion.allow_concurrent_runs:
            busy = conn.execute(
                text("SELECT id FROM runs WHERE ingestion_id = :i AND status IN ('PENDING', 'RUNNING') LIMIT 1"),
                {"i": ingestion.id},
            ).first()
            if busy is not None:
                raise RunInProgressError(f"ingestion {ingestion.name!r} already has run {busy.id} in progress")
        run_id = conn.execute(
            text(
                "INSERT INTO runs (ingestion_id, trigger, status, scheduled_for, listing) "
                "VALUES (:i, :t, 'PENDING', :due, :l) "
                "ON CONFLICT (ingestion_id, scheduled_for) DO NOTHING RETURNING id"
            ),
            {"i": ingestion.id, "t": trigger, "due": scheduled_for, "l": "full" if full_listing else None},
        ).scalar_one_or_none()
    return get(db, run_id) if run_id is not None else None


def claim_pending(db: Engine, worker_id: str, lease_seconds: int) -> Run | None:
    """Take one queued run — or a RUNNING run whose worker stopped heartbeating — to execute it.

    One statement with ``FOR UPDATE SKIP LOCKED``: two workers never take the same run. Runs of
    PAUSED ingestions stay queued.
    """
    with db.begin() as conn:
        run_id = conn.execute(
            text(
                """
                UPDATE runs SET status = 'RUNNING', worker_id = :worker, heartbeat_at = now(),
                    started_at = coalesce(started_at, now())
                WHERE id = (
                    SELECT r.id FROM runs r JOIN ingestions i ON i.id = r.ingestion_id
                    WHERE i.status = 'ACTIVE' AND (
                        r.status = 'PENDING'
                        OR (r.status = 'RUNNING'
                            AND r.heartbeat_at < now() - make_interval(secs => :lease))
                    )
                    ORDER BY r.id LIMIT 1
                    FOR UPDATE OF r SKIP LOCKED
                )
                RETURNING id
                """
            ),
            {"worker": worker_id, "lease": lease_seconds},
        ).scalar_one_or_none()
    return get(db, run_id) if run_id is not None else None


def heartbeat(db: Engine, run_id: int, worker_id: str) -> str:
    """Refresh the heartbeat of a run this worker executes.

    Returns "ok", "lost" (another worker took it over), "gone" (its ingestion was deleted) or
    "cancel" (a cancel was requested).
    """
    with db.begin() as conn:
        row = conn.execute(
            text(
                "UPDATE runs SET heartbeat_at = now() WHERE id = :id AND worker_id = :w AND status = 'RUNNING' "
                "RETURNING cancel_requested"
            ),
            {"id": run_id, "w": worker_id},
        ).first()
    if row is None:
        return "lost" if exists(db, run_id) else "gone"
    return "cancel" if row.cancel_requested else "ok"


def accepting_batches(db: Engine, run_id: int) -> bool:
    """True while a run is RUNNING and no cancel was requested: workers check it before each claim."""
    with db.connect() as conn:
        row = conn.execute(text("SELECT status, cancel_requested FROM runs WHERE id = :id"), {"id": run_id}).first()
    return row is not None and row.status == "RUNNING" and not row.cancel_requested


def requeue(db: Engine, run_id: int, worker_id: str) -> None:
    """Give a run back to the queue (graceful shutdown): another worker resumes it from discovery."""
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE runs SET status = 'PENDING', worker_id = NULL WHERE id = :id AND worker_id = :w "
                "AND status = 'RUNNING'"
            ),
            {"id": run_id, "w": worker_id},
        )


def cancel(db: Engine, run_id: int) -> Run:
    """Cancel a run: a PENDING run is CANCELLED at once; a RUNNING one gets ``cancel_requested``,
    which the worker executing it checks between batches (the batch in flight still commits).

    One statement, so a cancel racing a worker's claim of the same run resolves either way: the
    row lock makes the update see the claimed (RUNNING) row and request the cancel instead.
    Raises :class:`ConflictError` for a run that already finished.
    """
    with db.begin() as conn:
        cancelled = conn.execute(
            text(
                """
                UPDATE runs SET
                    status = CASE WHEN status = 'PENDING' THEN 'CANCELLED' ELSE status END,
                    finished_at = CASE WHEN status = 'PENDING' THEN now() ELSE finished_at END,
                    cancel_requested = true
                WHERE id = :id AND status IN ('PENDING', 'RUNNING')
                RETURNING id
                """
            ),
            {"id": run_id},
        ).first()
    run = get(db, run_id)
    if cancelled is None:
        raise ConflictError(f"run {run_id} already finished ({run.status})")
    return run
