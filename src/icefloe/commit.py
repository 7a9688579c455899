"""The commit protocol (DESIGN.md, steps 3-5): exactly once under crashes and many workers.

Data files are written before we get here, outside any lock. Then, in one ledger transaction
holding the per-table advisory lock:

1. fencing: every file version of the batch must still carry our ``lease_token``; a stale
   worker (paused past its lease, or whose file changed) commits nothing;
2. snapshot search: reload the table and look, in the snapshots since the files were first
   claimed, for any batch id that ever held these versions. Found → that commit already landed
   (ours, retried after an unknown outcome, or a dead worker's): the files are SUCCESS, we
   commit nothing. Iceberg's compare-and-swap on the table head makes search + commit one
   atomic step: a late commit landing in between makes ours fail, and we search again;
3. commit the data files (and, under ``replace``, the deletion of the previous versions' rows)
   with ``icefloe.batch-id`` in the snapshot summary;
4. mark the files SUCCESS with the snapshot id, and release the lock (commit the transaction).

A crash between 3 and 4 rolls back 4; the expired lease is reconciled by the same search.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.expressions import In
from pyiceberg.table import Table
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from icefloe import faults, ledger, metrics, tables
from icefloe.engines import StagedBatch
from icefloe.errors import CommitConflictError, CommitError, LeaseLostError
from icefloe.ledger import Batch
from icefloe.schema import SOURCE_FILE_COLUMN

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 20
# Snapshot timestamps come from writers' clocks; search a little before the first claim.
CLOCK_SKEW_MARGIN = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class CommitResult:
    snapshot_id: int | None
    committed: bool  # False: found already landed (no new snapshot from us)
    snapshots: int  # snapshots this commit added (delete + append under replace)


def _since_ms(first_claimed_at: dt.datetime) -> int:
    return int((first_claimed_at - CLOCK_SKEW_MARGIN).timestamp() * 1000)


def commit_batch(
    engine: Engine,
    catalog: Catalog,
    *,
    table_identifier: str,
    batch: Batch,
    staged: StagedBatch,
    run_id: int | None,
    replace_changed: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> CommitResult:
    """Commit a staged batch exactly once and mark its succeeded files SUCCESS.

    Raises :class:`LeaseLostError` when another worker owns any file of the batch now.
    """
    files = [o.file for o in staged.succeeded]
    props = tables.snapshot_properties(batch.batch_id, run_id, len(files))
    # Files at version > 1 had rows from an earlier version (same _source_file): replace them.
    replaced = sorted({f.file_path for f in files if f.version > 1}) if replace_changed else []
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                ledger.lock_table(conn, table_identifier)
                owned = ledger.files_still_owned(conn, files)
                if len(owned) != len(files):
                    raise LeaseLostError(
                        f"batch {batch.batch_id}: {len(files) - len(owned)} file(s) were taken over; committing nothing"
                    )
                if not staged.data_files and not replaced and staged.commit is None:
                    # No rows to add or remove (empty files): nothing can be duplicated or lost.
                    ledger.mark_succeeded(conn, staged.succeeded, None, batch.batch_id)
                    return CommitResult(None, committed=False, snapshots=0)
                table = tables.load_table(catalog, table_identifier)
                if table is None:
                    raise CommitError(f"table {table_identifier} disappeared before the commit")
                table = tables.ensure_icefloe_properties(table)
                landed = tables.snapshots_with_batches(table, batch.all_batch_ids, _since_ms(batch.first_claimed_at))
                if landed:
                    return _already_landed(conn, batch, staged, landed)
                faults.point("before-commit")
                if staged.commit is not None:
                    snapshot_id, count = staged.commit(table, props, replaced)
                else:
                    snapshot_id, count = _iceberg_commit(table, staged, props, replaced)
                faults.point("after-commit")
                ledger.mark_succeeded(conn, staged.succeeded, snapshot_id, batch.batch_id)
                return CommitResult(snapshot_id, committed=True, snapshots=count)
        except CommitFailedException as exc:
            # The table head moved (another writer); the search must run again on the new head.
            log.info("commit conflict on %s (attempt %d): %s", table_identifier, attempt, exc)
            metrics.COMMIT_CONFLICTS.labels(table=table_identifier).inc()
            last: Exception = exc
        except (CommitStateUnknownException, OperationalError, OSError) as exc:
            # Maybe committed: keep the data files; the next attempt's search tells.
            log.warning("commit outcome unknown on %s (attempt %d): %s", table_identifier, attempt, exc)
            last = exc
        sleep(min(5.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
    if isinstance(last, CommitFailedException):
        raise CommitConflictError(f"could not commit to {table_identifier}: {MAX_COMMIT_ATTEMPTS} conflicts") from last
    raise CommitError(f"could not commit to {table_identifier}: {last}") from last


def _iceberg_commit(table: Table, staged: StagedBatch, props: dict[str, str], replaced: list[str]) -> tuple[int, int]:
    """One Iceberg transaction: delete the replaced files' old rows, append the new data files."""
    tx = table.transaction()
    snapshots = 0
    if replaced:
        # pyiceberg's pydantic-based In() confuses mypy; the call is its documented form.
        tx.delete(In(SOURCE_FILE_COLUMN, replaced), snapshot_properties=props)  # type: ignore[call-arg, arg-type]
        snapshots += 1
    if staged.data_files:
        with tx.update_snapshot(snapshot_properties=props).fast_append() as append:
            for data_file in staged.data_files:
                append.append_data_file(data_file)
        snapshots += 1
    committed = tx.commit_transaction()
    current = committed.current_snapshot()
    assert current is not None
    return current.snapshot_id, snapshots


def _already_landed(conn: Connection, batch: Batch, staged: StagedBatch, landed: dict[uuid.UUID, int]) -> CommitResult:
    """Some batch holding these versions is already in the table: mark those files SUCCESS.

    If every file of ours is covered (the usual case: our own commit whose outcome we did not
    know), we are done. Files not covered cannot be committed from our data files (they mix
    rows of covered files), so they are released, unpenalised, to be read again.
    """
    covered = [o for o in staged.succeeded if (set(o.file.batch_ids) | {batch.batch_id}) & landed.keys()]
    rest = [o.file for o in staged.succeeded if o not in covered]
    snapshot_by_file = {
        o.file.id: next(landed[b] for b in (*o.file.batch_ids, batch.batch_id) if b in landed) for o in covered
    }
    for snapshot_id in set(snapshot_by_file.values()):
        ledger.mark_succeeded(
            conn, [o for o in covered if snapshot_by_file[o.file.id] == snapshot_id], snapshot_id, batch.batch_id
        )
    ledger.release(conn, rest, batch.batch_id)
    log.info("batch %s already in the table (%d files); %d released", batch.batch_id, len(covered), len(rest))
    return CommitResult(next(iter(landed.values())), committed=False, snapshots=0)
