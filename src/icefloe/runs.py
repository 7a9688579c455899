"""Run records: one per execution of an ingestion, with its counters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from icefloe.errors import NotFoundError
from icefloe.models import Run

COUNTERS = (
    "files_discovered",
    "files_new",
    "files_changed",
    "files_succeeded",
    "files_failed",
    "files_skipped",
    "records_ingested",
    "bytes_read",
    "snapshots_committed",
)


def start(db: Engine, ingestion_id: int, *, trigger: str, worker_id: str) -> Run:
    """A new run, RUNNING from now."""
    with Session(db, expire_on_commit=False) as session:
        run = Run(
            ingestion_id=ingestion_id,
            trigger=trigger,
            status="RUNNING",
            worker_id=worker_id,
            started_at=func.now(),
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


def finish(db: Engine, run_id: int, *, status: str, error_message: str | None = None) -> Run:
    with Session(db, expire_on_commit=False) as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status=status, error_message=error_message, finished_at=func.now())
        )
        session.commit()
        run = session.get(Run, run_id)
        assert run is not None
        return run


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
    duration = (
        (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else None
    )
    return {
        "run_id": run.id,
        "ingestion": ingestion_name,
        "status": run.status,
        **{name: getattr(run, name) for name in COUNTERS},
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "error_message": run.error_message,
    }
