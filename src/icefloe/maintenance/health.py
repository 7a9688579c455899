"""What maintenance reads from a table: its live and referenced files, and its health."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from icefloe import tables
from icefloe.errors import ConfigurationError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

# Data files smaller than this (Parquet bytes) count as small: compacted, and reported by health.
SMALL_FILE_BYTES = 16 << 20
MAINTENANCE_PROPERTY = "icefloe.maintenance"


def live_data_files(table: Table) -> dict[str, tuple[DataFile, int | None]]:
    """Path → (data file, snapshot id that added it), for the files live in the current snapshot."""
    from pyiceberg.manifest import DataFileContent

    snap = table.current_snapshot()
    if snap is None:
        return {}
    out: dict[str, tuple[DataFile, int | None]] = {}
    for manifest in snap.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if entry.data_file.content == DataFileContent.DATA:
                out[entry.data_file.file_path] = (entry.data_file, entry.snapshot_id)
    return out


def has_delete_files(table: Table) -> bool:
    from pyiceberg.manifest import ManifestContent

    snap = table.current_snapshot()
    return snap is not None and any(m.content == ManifestContent.DELETES for m in snap.manifests(table.io))


def icefloe_snapshot_ids(table: Table) -> set[int]:
    """Snapshots written by icefloe: a batch commit or an earlier maintenance run."""
    ids = set()
    for snap in table.metadata.snapshots:
        props = snap.summary.additional_properties if snap.summary is not None else {}
        if "icefloe.batch-id" in props or MAINTENANCE_PROPERTY in props:
            ids.add(snap.snapshot_id)
    return ids


def referenced_paths(table: Table) -> set[str]:
    """Every file path a snapshot still in the metadata references (data and delete files)."""
    seen_manifests: set[str] = set()
    paths: set[str] = set()
    for snap in table.metadata.snapshots:
        for manifest in snap.manifests(table.io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                paths.add(entry.data_file.file_path)
    return paths


def table_health(table: Table, small_bytes: int = SMALL_FILE_BYTES) -> dict[str, Any]:
    """What tells whether a table needs maintenance: snapshots, data files, small files."""
    files = live_data_files(table)
    sizes = [f.file_size_in_bytes for f, _ in files.values()]
    snap = table.current_snapshot()
    return {
        "snapshots": len(table.metadata.snapshots),
        "data_files": len(sizes),
        "data_bytes": sum(sizes),
        "average_file_bytes": sum(sizes) // len(sizes) if sizes else 0,
        "small_files": sum(1 for s in sizes if s < small_bytes),
        "small_file_bytes": small_bytes,
        "last_commit": dt.datetime.fromtimestamp(snap.timestamp_ms / 1000, dt.UTC).isoformat() if snap else None,
    }


def load(catalog: Catalog, table_identifier: str) -> Table:
    with tables.iceberg_errors(table_identifier):
        table = tables.load_table(catalog, table_identifier)
    if table is None:
        raise ConfigurationError(f"table {table_identifier} does not exist yet (nothing ingested)")
    return table
