"""icefloe driven in this process, as the CLI would drive it: define an ingestion, run it once,
read its ledger."""

from __future__ import annotations

from typing import Any

from icefloe import ingestions, ledger, worker
from icefloe.ingestions import IngestionSpec
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
