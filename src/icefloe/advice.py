"""What looks wrong after a run that did not fail: said in its summary (``warnings`` in ``--json``).

Each is a likely misconfiguration that still ingests "successfully": a pattern matching nothing,
files of another kind ingested as 0 rows, a CSV read with the wrong delimiter (the whole header
line became one column), files of unrelated layouts merged into one table by schema evolution —
and files HELD for a schema change nobody approved yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from icefloe import ledger, tables

if TYPE_CHECKING:
    from icefloe.models import Ingestion, Run
    from icefloe.runtime import Runtime

_SUFFIXES = {"csv": (".csv", ".tsv"), "jsonl": (".jsonl", ".ndjson", ".json"), "json": (".json",)}
_COMPRESSION = (".gz", ".gzip", ".zst", ".zstd", ".bz2")
_DELIMITERS = (",", ";", "\t", "|")


def _looks_like(path: str, fmt: str) -> bool:
    name = path.lower()
    for suffix in _COMPRESSION:
        name = name.removesuffix(suffix)
    return name.endswith(_SUFFIXES.get(fmt, (f".{fmt}",)))


def run_warnings(rt: Runtime, ingestion: Ingestion, run: Run) -> list[str]:
    """The warnings of a finished run (none for a FAILED run: its error says what went wrong)."""
    if run.status == "FAILED":
        return []
    warnings: list[str] = []
    if run.files_discovered == 0:
        warnings.append(
            f"no object under {ingestion.source} matches the ingestion (pattern {ingestion.pattern or '*'})"
        )
    with rt.db.connect() as conn:
        _count, empty = ledger.empty_files_of_run(conn, ingestion.id, run.id, limit=50)
        held = conn.execute(
            text("SELECT count(*) FROM files WHERE ingestion_id = :i AND run_id = :r AND status = 'HELD'"),
            {"i": ingestion.id, "r": run.id},
        ).scalar_one()
    if held:
        warnings.append(
            f"{held} file(s) HELD: their schema change waits for approval (icefloe schema pending {ingestion.name})"
        )
    odd = [path for path in empty if not _looks_like(path, ingestion.format)]
    if odd:
        warnings.append(
            f"{len(odd)} file(s) not named like {ingestion.format} were ingested as 0 rows, e.g. {odd[0]} "
            "(--pattern can leave them out)"
        )
    if run.snapshots_committed:
        table = tables.load_table(rt.catalog, ingestion.table_identifier)
        if table is not None:
            warnings += _table_warnings(table, ingestion, run)
    return warnings


def _user_columns(schema: Any) -> list[str]:
    return [f.name for f in schema.fields if f.name not in tables.ICEFLOE_COLUMNS]


def _table_warnings(table: Any, ingestion: Ingestion, run: Run) -> list[str]:
    warnings: list[str] = []
    columns = _user_columns(table.schema())
    if ingestion.format == "csv" and ingestion.csv_header:
        for name in columns:
            others = [d for d in _DELIMITERS if d != ingestion.csv_delimiter and d in name]
            if others:
                warnings.append(
                    f"column {name!r} looks like a whole header line split on {others[0]!r}, not "
                    f"{ingestion.csv_delimiter!r}: is --csv-delimiter right?"
                )
                break
    ours = [
        s
        for s in table.metadata.snapshots
        if s.summary is not None and s.summary.additional_properties.get("icefloe.run-id") == str(run.id)
    ]
    if ours and ours[0].parent_snapshot_id is not None:
        before = table.snapshot_by_id(ours[0].parent_snapshot_id)
        schemas = {s.schema_id: s for s in table.metadata.schemas}
        old = _user_columns(schemas[before.schema_id]) if before is not None and before.schema_id in schemas else []
        added = [c for c in columns if c not in old]
        if old and len(added) >= len(old):
            warnings.append(
                f"this run added {len(added)} column(s) ({', '.join(added[:5])}) to the table's {len(old)}: "
                "files of unrelated layouts merged into one table?"
            )
    return warnings
