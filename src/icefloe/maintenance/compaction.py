"""Compaction: bin-pack the small data files icefloe wrote into target-sized ones, one commit per bin.

pyiceberg 0.12 has no compaction (iceberg-python #1092); this is built on its primitives: ``ArrowScan``
to read, :func:`icefloe.tables.write_data_files` to write, ``overwrite`` to commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
from sqlalchemy import Engine

from icefloe import faults, ledger, tables
from icefloe.errors import CommitConflictError, CommitError, CommitOutcomeUnknownError, TableBusyError
from icefloe.ledger import LockBounds
from icefloe.maintenance.health import (
    MAINTENANCE_PROPERTY,
    SMALL_FILE_BYTES,
    has_delete_files,
    icefloe_snapshot_ids,
    live_data_files,
    load,
)
from icefloe.schema import SOURCE_FILE_COLUMN

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

# A bin's Parquet bytes: the target file size is in Arrow bytes, about 4 times the zstd Parquet size.
BIN_PARQUET_BYTES = 32 << 20
MAX_ATTEMPTS = 10
# A data file holding the rows of one source file only is dropped whole when that source is replaced
# (--on-change replace); merged into a bin it would make that replace rewrite the whole bin. Such
# files are compacted only once their source has had this long to change.
DEFAULT_REPLACE_WINDOW_SECONDS = 86_400


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
    held_back: int = 0  # one-source files younger than the replace window, left for cheap replaces


def one_source(data_file: DataFile, field_id: int | None) -> bool:
    """True when every row of ``data_file`` comes from one source file (exact ``_source_file``
    bounds, as icefloe writes them, that are equal)."""
    if field_id is None:
        return False
    lower = (data_file.lower_bounds or {}).get(field_id)
    upper = (data_file.upper_bounds or {}).get(field_id)
    return lower is not None and lower == upper


def settling(table: Table, live: dict[str, tuple[DataFile, int | None]], window_seconds: int, now_ms: int) -> set[str]:
    """Paths of the live one-source data files added less than ``window_seconds`` ago."""
    if window_seconds <= 0:
        return set()
    try:
        field_id: int | None = table.schema().find_field(SOURCE_FILE_COLUMN).field_id
    except ValueError:
        field_id = None
    cutoff = now_ms - window_seconds * 1000
    young = set()
    for path, (data_file, added_by) in live.items():
        snapshot = table.snapshot_by_id(added_by) if added_by is not None else None
        if snapshot is not None and snapshot.timestamp_ms > cutoff and one_source(data_file, field_id):
            young.add(path)
    return young


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
    replace_window_seconds: int = DEFAULT_REPLACE_WINDOW_SECONDS,
    dry_run: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Compaction:
    """Rewrite icefloe's small data files into target-sized ones, one commit per bin.

    One-source data files younger than ``replace_window_seconds`` are left as they are (see
    :data:`DEFAULT_REPLACE_WINDOW_SECONDS`); files packing several sources are compacted at once (a
    replace of one of their sources rewrites the file whether it is compacted or not).
    """
    result = Compaction()
    done: set[str] = set()  # bins settled in this call (committed or given up)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        result.attempts = attempt
        table = load(catalog, table_identifier)
        if has_delete_files(table):
            result.skipped = "the table has delete files (not written by icefloe); compaction skipped"
            return result
        ours = icefloe_snapshot_ids(table)
        live = live_data_files(table)
        candidates = {p: f for p, (f, added_by) in live.items() if added_by in ours and p not in done}
        young = settling(table, live, replace_window_seconds, int(time.time() * 1000)) & candidates.keys()
        if attempt == 1:
            result.small_files = sum(1 for f in candidates.values() if f.file_size_in_bytes < small_bytes)
            result.held_back = sum(1 for p in young if candidates[p].file_size_in_bytes < small_bytes)
        sizes = [(p, f.file_size_in_bytes) for p, f in candidates.items() if p not in young]
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
        table = load(catalog, table_identifier)
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
