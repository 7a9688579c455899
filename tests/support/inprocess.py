"""icefloe driven in this process, as the CLI would drive it: define an ingestion, run it once,
read its ledger; or a worker's steps one at a time (claim a batch, commit what was staged)."""

from __future__ import annotations

from typing import Any

from icefloe import commit, engines, ingestions, ledger, worker
from icefloe.engines import StagedBatch
from icefloe.ingestions import IngestionSpec
from icefloe.ledger import Batch, LockBounds
from icefloe.models import Ingestion, Run
from icefloe.runtime import Runtime


def ingest(rt: Runtime, name: str, source: str, table: str | None = None, **options: Any) -> Ingestion:
    """Define an ingestion (as ``icefloe ingestion create`` does); the table defaults to ``it.<name>``."""
    fmt = options.pop("format", "jsonl")
    spec = IngestionSpec(name=name, source=source, format=fmt, table=table or f"it.{name}", **options)
    return ingestions.create(rt.db, spec)


def run(rt: Runtime, name: str) -> Run:
    """One synchronous run of the named ingestion (``icefloe run NAME``)."""
    return worker.run_ingestion(rt, ingestions.get(rt.db, name), trigger="test")


def files(rt: Runtime, name: str, status: str | None = None) -> dict[str, dict[str, Any]]:
    """The ledger of one ingestion (``icefloe files NAME``), keyed by file URI."""
    i = ingestions.get(rt.db, name)
    with rt.db.connect() as conn:
        rows = ledger.list_files(conn, i.id, status=status, limit=100_000)
    return {str(r["file_path"]): r for r in rows}


def claim(rt: Runtime, ingestion: Ingestion, run_id: int, max_files: int = 1) -> Batch:
    """A batch of up to ``max_files`` files for the run, leased for 60 s (one worker's claim)."""
    with rt.db.begin() as conn:
        batch = ledger.claim_batch(
            conn,
            ingestion_id=ingestion.id,
            run_id=run_id,
            owner="test",
            lease_seconds=60,
            max_files=max_files,
            max_bytes=1 << 30,
            max_retries=3,
        )
    assert batch is not None
    return batch


def commit_staged(
    rt: Runtime, ingestion: Ingestion, run_id: int, batch: Batch, staged: StagedBatch, engine: engines.Engine
) -> commit.CommitResult:
    """Commit a staged batch as the worker does (under ``--on-change replace``), retrying at once."""
    return commit.commit_batch(
        rt.db,
        rt.catalog,
        engine,
        table_identifier=ingestion.table_identifier,
        batch=batch,
        staged=staged,
        run_id=run_id,
        replace_changed=True,
        bounds=LockBounds.for_lease(60),
        ingestion=ingestion.name,
        ingestion_id=ingestion.id,
        sleep=lambda _: None,
    )
