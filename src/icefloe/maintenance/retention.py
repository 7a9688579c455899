"""Snapshot expiry and orphan data file removal, kept out of the commit protocol's recovery window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text

from icefloe import ledger, tables
from icefloe.commit import CLOCK_SKEW_MARGIN
from icefloe.durations import format_duration
from icefloe.errors import ConfigurationError
from icefloe.ledger import LockBounds
from icefloe.maintenance.health import load, referenced_paths

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

DEFAULT_RETENTION_SECONDS = 7 * 86400
MIN_RETENTION_MARGIN_SECONDS = 86400  # retention ≥ lease + this: the longest outage we plan for


def check_retention(retention_seconds: int, lease_seconds: int) -> None:
    """Refuse a retention shorter than the recovery window the snapshot search needs."""
    minimum = lease_seconds + MIN_RETENTION_MARGIN_SECONDS
    if retention_seconds < minimum:
        raise ConfigurationError(
            f"snapshot retention {format_duration(retention_seconds)} is shorter than the recovery window "
            f"(lease {format_duration(lease_seconds)} + 1d = {format_duration(minimum)}): "
            "unknown-outcome commits could no longer be found"
        )


def protected_since(now: dt.datetime, retention_seconds: int, first_claims: Iterable[dt.datetime]) -> dt.datetime:
    """Snapshots and data files at or after this instant are kept: the retention, and never after
    the first claim (less the clock-skew margin) of any file still PROCESSING on the table."""
    cutoff = now - dt.timedelta(seconds=retention_seconds)
    claims = [c - CLOCK_SKEW_MARGIN for c in first_claims]
    return min([cutoff, *claims])


def processing_first_claims(db: Engine, table_identifier: str) -> list[dt.datetime]:
    """First claims of the files still PROCESSING on any ingestion writing ``table_identifier``:
    batches whose outcome may not be settled, which the snapshot search may still need."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT min(f.first_claimed_at) AS first FROM files f JOIN ingestions i ON i.id = f.ingestion_id
                WHERE i.table_identifier = :t AND f.status = 'PROCESSING' AND f.first_claimed_at IS NOT NULL
                """
            ),
            {"t": table_identifier},
        ).all()
    return [r.first for r in rows if r.first is not None]


def expire_snapshots(
    db: Engine,
    catalog: Catalog,
    table_identifier: str,
    *,
    keep_since: dt.datetime,
    bounds: LockBounds,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Remove the snapshots older than ``keep_since`` (never the current one), under the commit lock."""
    with db.begin() as conn:
        ledger.lock_table(conn, table_identifier, bounds)
        table = load(catalog, table_identifier)
        current = table.current_snapshot()
        cutoff_ms = int(keep_since.timestamp() * 1000)
        expired = [
            s.snapshot_id
            for s in table.metadata.snapshots
            if s.timestamp_ms < cutoff_ms and (current is None or s.snapshot_id != current.snapshot_id)
        ]
        if expired and not dry_run:
            with tables.iceberg_errors(table_identifier):
                table.maintenance.expire_snapshots().by_ids(expired).commit()
    return {"snapshots_expired": len(expired), "kept_since": keep_since.isoformat()}


def remove_orphans(
    catalog: Catalog, table_identifier: str, *, older_than: dt.datetime, dry_run: bool = False
) -> dict[str, Any]:
    """Delete data files under the table's ``data/`` folder that no snapshot references and that
    were written before ``older_than`` (see :func:`protected_since`)."""
    from pyarrow.fs import FileSelector, FileType
    from pyiceberg.io.pyarrow import PyArrowFileIO

    table = load(catalog, table_identifier)
    if not isinstance(table.io, PyArrowFileIO):
        return {"orphans_removed": 0, "orphan_bytes": 0, "skipped": "the table's FileIO cannot list files"}
    referenced = {bare(p) for p in referenced_paths(table)}
    scheme, netloc, path = PyArrowFileIO.parse_location(table.location().rstrip("/") + "/data")
    fs = table.io.fs_by_scheme(scheme, netloc)
    removed, nbytes = 0, 0
    for info in fs.get_file_info(FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type != FileType.File or info.mtime is None:
            continue
        mtime = info.mtime if info.mtime.tzinfo else info.mtime.replace(tzinfo=dt.UTC)
        if bare(info.path) in referenced or mtime >= older_than:
            continue
        if not dry_run:
            fs.delete_file(info.path)
        removed += 1
        nbytes += info.size or 0
    return {"orphans_removed": removed, "orphan_bytes": nbytes, "older_than": older_than.isoformat()}


def bare(location: str) -> str:
    """A location without its scheme and leading slashes: ``s3://b/k`` and the filesystem's ``b/k``
    (or ``file:///x`` and ``/x``) compare equal."""
    return location.split("://", 1)[-1].lstrip("/")
