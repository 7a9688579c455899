"""Helpers of the integration tests: define and run ingestions in this process, read results back.

Results are read back from the Iceberg table through the runtime's catalog (the same catalog the
CLI uses), and from the ledger through ``icefloe.ledger``.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pyarrow as pa
from pyiceberg.table import Table

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


def load_table(rt: Runtime, identifier: str) -> Table:
    return rt.catalog.load_table(identifier)


def rows(rt: Runtime, identifier: str) -> pa.Table:
    """Every row of the table at its current snapshot."""
    return load_table(rt, identifier).scan().to_arrow()


def ids_by_file(table: pa.Table, column: str = "id") -> dict[str, list[Any]]:
    """``_source_file`` → sorted values of ``column`` (the rows each file contributed)."""
    out: dict[str, list[Any]] = {}
    for source, value in zip(table.column("_source_file").to_pylist(), table.column(column).to_pylist(), strict=True):
        out.setdefault(source, []).append(value)
    return {k: sorted(v) for k, v in out.items()}


def icefloe_snapshots(table: Table) -> list[dict[str, str]]:
    """The summary properties of every snapshot of ``table``, oldest first."""
    return [
        dict(snap.summary.additional_properties) if snap.summary is not None else {}
        for snap in table.metadata.snapshots
    ]


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ``icefloe`` CLI in a subprocess; ``check``: exit code 0 expected."""
    proc = subprocess.run(["icefloe", *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc
