"""Table maintenance (`icefloe maintain`): compaction, snapshot expiry, orphan data file removal.

Every step keeps the exactly-once protocol (:mod:`icefloe.commit`) intact:

- **compaction** bin-packs the small data files icefloe wrote into files of about the target size
  in one ``overwrite`` commit (old files deleted, new ones added). It takes the per-table commit
  lock, so it never races an icefloe commit, and before committing it checks that every file it
  read is still live in the table head (a ``replace`` may have rewritten one meanwhile): if not it
  plans again; rows are never lost or doubled. Its snapshot carries ``icefloe.maintenance`` and no
  ``icefloe.batch-id``, so the snapshot search never mistakes it for a batch;
- **snapshot expiry** never removes a snapshot younger than the recovery window (the retention,
  at least lease + 1 day) nor one taken after the first claim of a file still PROCESSING, so the
  snapshot search finds every batch whose outcome is not settled yet;
- **orphan removal** deletes only data files under the table's ``data/`` folder that no snapshot
  in the metadata references, older than that same cutoff: a file of a batch whose outcome is
  unknown (PROCESSING in the ledger) is younger than its first claim and is spared until the
  batch is resolved.

pyiceberg 0.12 has no compaction (iceberg-python #1092); it is built here on its primitives
(``ArrowScan`` to read, :func:`icefloe.tables.write_data_files` to write, ``overwrite`` to commit).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlalchemy import Engine, text

from icefloe import faults, ledger, tables
from icefloe.commit import CLOCK_SKEW_MARGIN
from icefloe.durations import format_duration
from icefloe.errors import (
    CommitConflictError,
    CommitError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    TableBusyError,
)
from icefloe.ledger import LockBounds
from icefloe.schema import SOURCE_FILE_COLUMN

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS = 7 * 86400
MIN_RETENTION_MARGIN_SECONDS = 86400  # retention ≥ lease + this: the longest outage we plan for
# Data files smaller than this (Parquet bytes) count as small: compacted, and reported by health.
SMALL_FILE_BYTES = 16 << 20
# A bin's Parquet bytes: the target file size is in Arrow bytes, about 4 times the zstd Parquet size.
BIN_PARQUET_BYTES = 32 << 20
MAINTENANCE_PROPERTY = "icefloe.maintenance"
MAX_ATTEMPTS = 10


# --------------------------------------------------------------------------- pure decisions


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


def plan_bins(sizes: Sequence[tuple[str, int]], small_bytes: int, bin_bytes: int) -> list[list[str]]:
    """Paths of small files packed, in order, into bins of at most ``bin_bytes``; single-file bins
    are dropped (rewriting one file alone gains nothing)."""
    bins: list[list[str]] = []
    current: list[str] = []
    size = 0
    for path, nbytes in sorted(sizes):
        if nbytes >= small_bytes:
            continue
        if current and size + nbytes > bin_bytes:
            bins.append(current)
            current, size = [], 0
        current.append(path)
        size += nbytes
    if current:
        bins.append(current)
    return [b for b in bins if len(b) > 1]


# --------------------------------------------------------------------------- reading the table


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


def _has_delete_files(table: Table) -> bool:
    from pyiceberg.manifest import ManifestContent

    snap = table.current_snapshot()
    return snap is not None and any(m.content == ManifestContent.DELETES for m in snap.manifests(table.io))


def _icefloe_snapshot_ids(table: Table) -> set[int]:
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


# --------------------------------------------------------------------------- compaction


@dataclass
class Compaction:
    small_files: int = 0
    files_rewritten: int = 0
    files_written: int = 0
    records: int = 0
    bytes_rewritten: int = 0
    snapshot_id: int | None = None
    attempts: int = 0
    skipped: str | None = None


def _read_sorted(table: Table, files: Sequence[DataFile]) -> pa.Table:
    """The rows of ``files`` in the table's current schema, sorted by source file so a later
    ``replace`` of one source touches few of the compacted files."""
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan
    from pyiceberg.table import FileScanTask

    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    data = scan.to_table([FileScanTask(f) for f in files])
    if SOURCE_FILE_COLUMN in data.column_names:
        data = data.sort_by(SOURCE_FILE_COLUMN)
    return data


def compact(
    db: Engine,
    catalog: Catalog,
    table_identifier: str,
    *,
    bounds: LockBounds,
    small_bytes: int = SMALL_FILE_BYTES,
    bin_bytes: int = BIN_PARQUET_BYTES,
    dry_run: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Compaction:
    """Rewrite icefloe's small data files into target-sized ones, one commit per bin."""
    result = Compaction()
    done: set[str] = set()  # bins settled in this call (committed or given up)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        result.attempts = attempt
        table = _load(catalog, table_identifier)
        if _has_delete_files(table):
            result.skipped = "the table has delete files (not written by icefloe); compaction skipped"
            return result
        ours = _icefloe_snapshot_ids(table)
        live = live_data_files(table)
        candidates = {p: f for p, (f, added_by) in live.items() if added_by in ours and p not in done}
        sizes = [(p, f.file_size_in_bytes) for p, f in candidates.items()]
        if attempt == 1:
            result.small_files = sum(1 for _, s in sizes if s < small_bytes)
        bins = plan_bins(sizes, small_bytes, bin_bytes)
        if not bins:
            return result
        if dry_run:
            result.files_rewritten = sum(len(b) for b in bins)
            result.bytes_rewritten = sum(candidates[p].file_size_in_bytes for b in bins for p in b)
            return result
        if not _compact_bins(db, catalog, table_identifier, table, bins, candidates, bounds, result, done):
            return result
        sleep(min(2.0, 0.1 * attempt))
    raise CommitConflictError(f"could not compact {table_identifier}: {MAX_ATTEMPTS} conflicts")


def _compact_bins(
    db: Engine,
    catalog: Catalog,
    table_identifier: str,
    table: Table,
    bins: list[list[str]],
    candidates: dict[str, DataFile],
    bounds: LockBounds,
    result: Compaction,
    done: set[str],
) -> bool:
    """Rewrite and commit each bin; True when the table moved under us and the plan must be redone."""
    for paths in bins:
        old = [candidates[p] for p in paths]
        data = _read_sorted(table, old)
        new = list(tables.write_data_files(table, data, data.schema))
        try:
            snapshot_id = _commit_rewrite(db, catalog, table_identifier, old, new, bounds)
        except CommitOutcomeUnknownError as exc:
            # Maybe landed: keep the new files (referenced if it did); the next plan tells.
            log.warning("compaction of %s: outcome unknown (%s); planning again", table_identifier, exc)
            return True
        except (CommitConflictError, TableBusyError) as exc:
            log.info("compaction of %s: %s; planning again", table_identifier, exc)
            snapshot_id = None
        except BaseException:
            tables.delete_data_files(table, new)
            raise
        if snapshot_id is None:  # nothing landed: an input changed, or the head moved
            tables.delete_data_files(table, new)
            return True
        done.update(paths)
        result.files_rewritten += len(old)
        result.files_written += len(new)
        result.records += data.num_rows
        result.bytes_rewritten += sum(f.file_size_in_bytes for f in old)
        result.snapshot_id = snapshot_id
    return False


def _commit_rewrite(
    db: Engine,
    catalog: Catalog,
    table_identifier: str,
    old: Sequence[DataFile],
    new: Sequence[DataFile],
    bounds: LockBounds,
) -> int | None:
    """Replace ``old`` by ``new`` in one commit, under the table's commit lock; None when an old file
    is no longer live (a replace or another compaction got there first: plan again).

    On an unknown outcome the caller plans again: if the rewrite landed, the new files are live
    and the old ones gone, so the next plan simply sees compacted files.
    """
    props = {MAINTENANCE_PROPERTY: "compaction", "icefloe.file-count": str(len(old))}
    with db.begin() as conn:
        ledger.lock_table(conn, table_identifier, bounds)
        table = _load(catalog, table_identifier)
        live = live_data_files(table)
        if any(f.file_path not in live for f in old):
            return None
        faults.point("maintenance-before-commit")
        with tables.iceberg_errors(table_identifier):
            tx = table.transaction()
            with tx.update_snapshot(snapshot_properties=props).overwrite() as rewrite:
                for f in old:
                    rewrite.delete_data_file(live[f.file_path][0])
                for f in new:
                    rewrite.append_data_file(f)
            committed = tx.commit_transaction()
        faults.point("maintenance-after-commit")
    current = committed.current_snapshot()
    if current is None:
        raise CommitError(f"{table_identifier}: the compaction left no current snapshot")
    return current.snapshot_id


def _load(catalog: Catalog, table_identifier: str) -> Table:
    with tables.iceberg_errors(table_identifier):
        table = tables.load_table(catalog, table_identifier)
    if table is None:
        raise ConfigurationError(f"table {table_identifier} does not exist yet (nothing ingested)")
    return table


# --------------------------------------------------------------------------- expiry and orphans


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
        table = _load(catalog, table_identifier)
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

    table = _load(catalog, table_identifier)
    if not isinstance(table.io, PyArrowFileIO):
        return {"orphans_removed": 0, "orphan_bytes": 0, "skipped": "the table's FileIO cannot list files"}
    referenced = {_bare(p) for p in referenced_paths(table)}
    scheme, netloc, path = PyArrowFileIO.parse_location(table.location().rstrip("/") + "/data")
    fs = table.io.fs_by_scheme(scheme, netloc)
    removed, nbytes = 0, 0
    for info in fs.get_file_info(FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type != FileType.File or info.mtime is None:
            continue
        mtime = info.mtime if info.mtime.tzinfo else info.mtime.replace(tzinfo=dt.UTC)
        if _bare(info.path) in referenced or mtime >= older_than:
            continue
        if not dry_run:
            fs.delete_file(info.path)
        removed += 1
        nbytes += info.size or 0
    return {"orphans_removed": removed, "orphan_bytes": nbytes, "older_than": older_than.isoformat()}


def _bare(location: str) -> str:
    """A location without its scheme and leading slashes: ``s3://b/k`` and the filesystem's ``b/k``
    (or ``file:///x`` and ``/x``) compare equal."""
    return location.split("://", 1)[-1].lstrip("/")


# --------------------------------------------------------------------------- the whole pass


def maintain(
    db: Engine,
    catalog: Catalog,
    table_identifier: str,
    *,
    lease_seconds: int,
    retention_seconds: int = DEFAULT_RETENTION_SECONDS,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Compact, expire, remove orphans (in that order: expiry makes compaction's inputs orphans)."""
    check_retention(retention_seconds, lease_seconds)
    bounds = LockBounds.for_lease(lease_seconds)
    started = time.monotonic()
    report: dict[str, Any] = {"table": table_identifier, "dry_run": dry_run}
    compaction = compact(db, catalog, table_identifier, bounds=bounds, dry_run=dry_run)
    report["compaction"] = vars(compaction) | {"seconds": round(time.monotonic() - started, 3)}
    now = now or dt.datetime.now(dt.UTC)
    keep_since = protected_since(now, retention_seconds, processing_first_claims(db, table_identifier))
    t = time.monotonic()
    report["expiry"] = expire_snapshots(
        db, catalog, table_identifier, keep_since=keep_since, bounds=bounds, dry_run=dry_run
    ) | {"seconds": round(time.monotonic() - t, 3)}
    t = time.monotonic()
    report["orphans"] = remove_orphans(catalog, table_identifier, older_than=keep_since, dry_run=dry_run) | {
        "seconds": round(time.monotonic() - t, 3)
    }
    report["health"] = table_health(_load(catalog, table_identifier))
    report["seconds"] = round(time.monotonic() - started, 3)
    return report
