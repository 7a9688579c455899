"""The exactly-once protocol's commit side (DESIGN.md, steps 3-5): commit, unknown outcome, reconcile.

Data files are staged before we get here, outside any lock. Then, in one ledger transaction
holding the per-table advisory lock:

1. fencing: every file version of the batch must still carry our ``lease_token``; a stale
   worker (paused past its lease, or whose file changed) commits nothing;
2. snapshot search: reload the table and look, in the snapshots since the files were first
   claimed, for any batch id that ever held these versions. Found → that commit already landed
   (ours, retried after an unknown outcome, or a dead worker's): the files are SUCCESS, we
   commit nothing;
3. the engine's commit: one Iceberg transaction (under ``replace`` also deleting the previous
   versions' rows) with ``icefloe.batch-id`` in the snapshot summary. It is a compare-and-swap on
   the table head loaded in step 2: if anything committed since, it fails and we search again;
4. mark the files SUCCESS with the snapshot id, and release the lock (commit the transaction).

A crash between 3 and 4 rolls back 4; the expired lease is reconciled by the same search
(:func:`reconcile_expired_leases`, step 5).

**The commit window is bounded** (:class:`~icefloe.ledger.LockBounds`, from the lease): a waiter
gives up on the lock after ``wait`` and retries; PostgreSQL ends the session of a holder idle in
the transaction (or in one statement) longer than ``hold``, which releases the lock. A worker
frozen inside the window (SIGSTOP, GC pause, VM freeze, partition) therefore stalls its table for
at most ``hold`` seconds, and whatever moment it resumes at, nothing is committed twice:

- frozen before its Iceberg commit: when it resumes, its commit still goes out (the catalog has
  its own connection) — but only as a compare-and-swap on the head it searched. If another worker
  committed to the table since (for instance these very files, reclaimed after the frozen
  worker's leases expired), the swap fails; the retry's fencing check finds the leases gone and
  commits nothing. If nobody committed since, its commit lands first and whoever holds the files
  now finds its batch id in the snapshot search (every batch id that ever held a file version is
  kept) and commits nothing of them: once either way;
- frozen after its Iceberg commit, before the ledger update: its session is gone, so the update
  never happens; the files' leases expire and reconciliation finds the batch id (SUCCESS). When
  it resumes, its ledger update fails, its retry is fenced off.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine

from icefloe import faults, ledger, metrics, quarantine, retry, runs, schema_changes, tables
from icefloe.errors import (
    CommitConflictError,
    CommitError,
    CommitOutcomeUnknownError,
    LeaseLostError,
    LedgerUnavailableError,
    TableBusyError,
)
from icefloe.ledger import Batch, ExpiredFile, FileOutcome, LockBounds

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from icefloe.engines import Committed, StagedBatch
    from icefloe.engines import Engine as StagingEngine
    from icefloe.models import Ingestion

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 20
# Snapshot timestamps come from writers' clocks; search a little before the first claim.
CLOCK_SKEW_MARGIN = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class CommitResult:
    snapshot_id: int | None
    committed: bool  # False: found already landed (no new snapshot from us)
    snapshots: int  # snapshots this commit added (delete + append under replace)
    succeeded: int  # files now SUCCESS (fewer than staged when some were released)


@dataclass(frozen=True)
class Reconciled:
    committed: int  # expired leases whose batch was found in a snapshot → SUCCESS
    requeued: int  # not found → claimable again (or FAILED WorkerLost when out of attempts)


# --------------------------------------------------------------------------- pure decisions


def search_since_ms(first_claimed_at: Iterable[dt.datetime | None]) -> int:
    """Where the snapshot search starts: the earliest first claim, less the clock-skew margin."""
    claimed = [c for c in first_claimed_at if c is not None]
    return int((min(claimed) - CLOCK_SKEW_MARGIN).timestamp() * 1000) if claimed else 0


def covering_snapshot(batch_ids: Iterable[uuid.UUID], landed: dict[uuid.UUID, int]) -> int | None:
    """The snapshot holding a file version, given every batch id that ever held it, or None."""
    return next((landed[b] for b in batch_ids if b in landed), None)


def split_landed(
    outcomes: Sequence[FileOutcome], batch_id: uuid.UUID, landed: dict[uuid.UUID, int]
) -> tuple[dict[int, list[FileOutcome]], list[FileOutcome]]:
    """Files of a batch found already committed, by snapshot id, and the rest (to release)."""
    by_snapshot: dict[int, list[FileOutcome]] = {}
    rest: list[FileOutcome] = []
    for outcome in outcomes:
        snapshot = covering_snapshot((*outcome.file.batch_ids, batch_id), landed)
        if snapshot is None:
            rest.append(outcome)
        else:
            by_snapshot.setdefault(snapshot, []).append(outcome)
    return by_snapshot, rest


def split_expired(
    expired: Sequence[ExpiredFile], landed: dict[uuid.UUID, int]
) -> tuple[list[tuple[ExpiredFile, int]], list[ExpiredFile]]:
    """Expired leases whose batch landed (with the snapshot), and those whose batch did not."""
    committed, lost = [], []
    for f in expired:
        snapshot = covering_snapshot(f.batch_ids, landed)
        if snapshot is None:
            lost.append(f)
        else:
            committed.append((f, snapshot))
    return committed, lost


def replaced_sources(outcomes: Sequence[FileOutcome], replace_changed: bool) -> list[str]:
    """``_source_file`` values whose earlier versions' rows this batch replaces (versions > 1)."""
    return sorted({o.file.file_path for o in outcomes if o.file.version > 1}) if replace_changed else []


# --------------------------------------------------------------------------- the commit


def commit_batch(
    db: Engine,
    catalog: Catalog,
    engine: StagingEngine,
    *,
    table_identifier: str,
    batch: Batch,
    staged: StagedBatch,
    run_id: int | None,
    replace_changed: bool,
    bounds: LockBounds,
    ingestion: str = "",
    ingestion_id: int | None = None,
    quarantined: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> CommitResult:
    """Commit a staged batch exactly once and mark its succeeded files SUCCESS.

    ``quarantined`` (``--on-bad-record quarantine``): the batch's bad records are committed to
    ``<table>__quarantine`` first, in the same lock (see :mod:`icefloe.quarantine` for the order).

    Raises :class:`LeaseLostError` when another worker owns any file of the batch now, and
    :class:`LedgerUnavailableError` when the ledger stayed away through every attempt (the batch
    stays leased: once the lease expires, reconciliation decides from the snapshots).
    """
    files = [o.file for o in staged.succeeded]
    props = tables.snapshot_properties(batch.batch_id, run_id, len(files))
    replaced = replaced_sources(staged.succeeded, replace_changed)
    last: Exception | None = None
    for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
        try:
            with db.begin() as conn:
                ledger.lock_table(conn, table_identifier, bounds)
                owned = ledger.files_still_owned(conn, files)
                if len(owned) != len(files):
                    raise LeaseLostError(
                        f"batch {batch.batch_id}: {len(files) - len(owned)} file(s) were taken over; committing nothing"
                    )
                since = search_since_ms(f.first_claimed_at for f in files)
                # Loaded before the data table, so that its commit is fenced like the data's.
                qtable = quarantine.load(catalog, table_identifier) if quarantined else None
                if staged.records == 0 and not replaced:
                    # No rows to add or remove (empty files, or only bad records): nothing of the
                    # data table can be duplicated or lost; the quarantine commit is idempotent.
                    added = _quarantine(
                        catalog, table_identifier, qtable, batch, staged, props, replaced, since, quarantined
                    )
                    ledger.mark_succeeded(conn, staged.succeeded, None, batch.batch_id)
                    return CommitResult(None, committed=added > 0, snapshots=added, succeeded=len(files))
                with tables.iceberg_errors(table_identifier):
                    table = tables.load_table(catalog, table_identifier)
                    if table is None:
                        raise CommitError(f"table {table_identifier} disappeared before the commit")
                    table = tables.ensure_icefloe_properties(table)
                landed = tables.snapshots_with_batches(table, batch.all_batch_ids, since)
                if landed:
                    # Snapshots of this very claim (an attempt whose outcome was unknown: the ledger
                    # went away after the commit) are this run's; an earlier claim's are its run's.
                    own = tables.count_batch_snapshots(table, batch.batch_id, since)
                    return _already_landed(conn, batch, staged, landed, own)
                faults.point("before-commit")
                added = _quarantine(
                    catalog, table_identifier, qtable, batch, staged, props, replaced, since, quarantined
                )
                committed = engine.commit(table, staged, props, replaced)
                faults.point("after-commit")
                ledger.mark_succeeded(conn, staged.succeeded, committed.snapshot_id, batch.batch_id)
                if ingestion_id is not None:
                    _record_schema(conn, ingestion_id, table_identifier, staged, committed)
                log.info("committed %d file(s) to %s: snapshot %s", len(files), table_identifier, committed.snapshot_id)
                return CommitResult(committed.snapshot_id, True, committed.snapshots + added, succeeded=len(files))
        except CommitConflictError as exc:
            # The table head moved (another writer); the search must run again on the new head.
            metrics.COMMIT_CONFLICTS.labels(ingestion).inc()
            log.info("commit conflict on %s (attempt %d): %s", table_identifier, attempt, exc)
            last = exc
        except TableBusyError as exc:
            log.info("%s (attempt %d); retrying", exc, attempt)
            last = exc
        except (CommitOutcomeUnknownError, LedgerUnavailableError) as exc:
            # Maybe committed: keep the data files; the next attempt's search tells.
            log.warning("commit outcome unknown on %s (attempt %d): %s", table_identifier, attempt, exc)
            last = exc
        sleep(retry.COMMIT.delay(attempt))
    if isinstance(last, LedgerUnavailableError):
        raise last
    if isinstance(last, CommitConflictError | TableBusyError):
        raise CommitConflictError(f"could not commit to {table_identifier}: {MAX_COMMIT_ATTEMPTS} conflicts") from last
    raise CommitError(f"could not commit to {table_identifier}: {last}") from last


def _quarantine(
    catalog: Catalog,
    table_identifier: str,
    qtable: Table | None,
    batch: Batch,
    staged: StagedBatch,
    props: dict[str, str],
    replaced: list[str],
    since: int,
    quarantined: bool,
) -> int:
    """The quarantine commit (step 1 of :mod:`icefloe.quarantine`), when the ingestion quarantines."""
    if not quarantined or (qtable is None and not staged.bad_records):
        return 0  # no quarantine table and nothing for it (or not quarantining)
    added = quarantine.commit(catalog, table_identifier, qtable, batch, staged, props, replaced, since)
    faults.point("after-quarantine-commit")
    return added


def _already_landed(
    conn: Connection, batch: Batch, staged: StagedBatch, landed: dict[uuid.UUID, int], own_snapshots: int
) -> CommitResult:
    """Some batch holding these versions is already in the table: mark those files SUCCESS.

    If every file of ours is covered (the usual case: our own commit whose outcome we did not
    know), we are done. Files not covered cannot be committed from our data files (they mix
    rows of covered files), so they are released, unpenalised, to be read again.
    """
    by_snapshot, rest = split_landed(staged.succeeded, batch.batch_id, landed)
    for snapshot_id, outcomes in by_snapshot.items():
        ledger.mark_succeeded(conn, outcomes, snapshot_id, batch.batch_id)
    ledger.release(conn, [o.file for o in rest], batch.batch_id)
    covered = sum(len(o) for o in by_snapshot.values())
    log.info("batch %s already in the table (%d files); %d released", batch.batch_id, covered, len(rest))
    return CommitResult(next(iter(landed.values())), committed=False, snapshots=own_snapshots, succeeded=covered)


def _record_schema(
    conn: Connection, ingestion_id: int, table_identifier: str, staged: StagedBatch, committed: Committed
) -> None:
    """The schema history of the table, in the ledger transaction of the commit that made it."""
    if committed.schema_id is None:
        return
    if staged.created_by is not None:
        schema_changes.record_applied(
            conn,
            ingestion_id=ingestion_id,
            table_identifier=table_identifier,
            change=None,
            created=True,
            first_file=staged.created_by,
            schema_id=0,  # a new Iceberg table's first schema
        )
    if committed.schema_change is not None:
        schema_changes.record_applied(
            conn,
            ingestion_id=ingestion_id,
            table_identifier=table_identifier,
            change=committed.schema_change,
            created=False,
            first_file=staged.evolved_by,
            schema_id=committed.schema_id,
        )


# --------------------------------------------------------------------------- reconciliation


def reconcile_expired_leases(
    db: Engine,
    catalog: Callable[[], Catalog],
    ingestion: Ingestion,
    bounds: LockBounds,
    *,
    run_id: int | None = None,
) -> Reconciled:
    """Resolve PROCESSING files whose lease expired (DESIGN.md step 5), under the per-table lock.

    ``catalog`` is called only when something expired: a no-op pass (most of them) loads nothing.

    The holder is dead or frozen past its lease: if any batch that ever held a file is in a
    snapshot, the file is SUCCESS (and its run's counters say so); otherwise it is claimable again,
    the crash counting as an attempt. A table busy past the wait bound is left for the next pass.
    ``run_id``: the run reconciling; a file whose last attempt this was ends FAILED in that run,
    so the run reports it (the run that claimed it died with its batch).
    """
    table_identifier = ingestion.table_identifier
    with db.connect() as conn:
        if not ledger.any_expired_lease(conn, ingestion.id):
            return Reconciled(0, 0)
    try:
        with db.begin() as conn:
            ledger.lock_table(conn, table_identifier, bounds)
            expired = ledger.lock_expired_leases(conn, ingestion.id)
            if not expired:
                return Reconciled(0, 0)
            with tables.iceberg_errors(table_identifier):
                table = tables.load_table(catalog(), table_identifier)
            landed: dict[uuid.UUID, int] = {}
            if table is not None:
                batch_ids = {b for f in expired for b in f.batch_ids}
                since = search_since_ms(f.first_claimed_at for f in expired)
                landed = tables.snapshots_with_batches(table, batch_ids, since)
            committed, lost = split_expired(expired, landed)
            ledger.reconcile_committed(conn, [f for f, _ in committed], [s for _, s in committed])
            if table is not None and committed:
                _record_reconciled_schema(conn, ingestion, table, committed)
            ledger.reconcile_lost(conn, lost, ingestion.max_retries, run_id=run_id)
    except (TableBusyError, CommitOutcomeUnknownError) as exc:
        log.info("reconciliation of %s postponed: %s", ingestion.name, exc)
        return Reconciled(0, 0)
    for run_id, n in _count_by_run(f for f, _ in committed).items():
        runs.add(db, run_id, files_succeeded=n)
    metrics.RECONCILIATIONS.labels(ingestion.name, "committed").inc(len(committed))
    metrics.RECONCILIATIONS.labels(ingestion.name, "requeued").inc(len(lost))
    log.info(
        "reconciled %d expired lease(s) of %s: %d committed, %d requeued",
        len(expired),
        ingestion.name,
        len(committed),
        len(lost),
    )
    return Reconciled(len(committed), len(lost))


def _record_reconciled_schema(
    conn: Connection, ingestion: Ingestion, table: Table, committed: Sequence[tuple[ExpiredFile, int]]
) -> None:
    """A dead worker's batch that changed the table's schema (add-columns) gets its history row here:
    the ledger transaction of its commit, which would have written it, never happened."""
    from icefloe.evolution import diff
    from icefloe.schema import normalise_type

    schemas = {s.schema_id: s for s in table.metadata.schemas}
    first_file: dict[int, str] = {}
    for f, snapshot_id in committed:
        first_file.setdefault(snapshot_id, f.file_path)

    def batch_of(snapshot: Any) -> str | None:
        return snapshot.summary.additional_properties.get("icefloe.batch-id") if snapshot.summary else None

    for snapshot_id, file_path in first_file.items():
        snapshot = table.snapshot_by_id(snapshot_id)
        if snapshot is None:
            continue
        parent = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
        while parent is not None and batch_of(parent) == batch_of(snapshot):  # replace: delete, then append
            parent = table.snapshot_by_id(parent.parent_snapshot_id) if parent.parent_snapshot_id else None
        if parent is None or snapshot.schema_id == parent.schema_id:
            continue
        if snapshot.schema_id not in schemas or parent.schema_id not in schemas:
            continue
        change = diff(schemas[parent.schema_id].as_arrow(), schemas[snapshot.schema_id].as_arrow(), normalise_type)
        if change:
            schema_changes.record_applied(
                conn,
                ingestion_id=ingestion.id,
                table_identifier=ingestion.table_identifier,
                change=change,
                created=False,
                first_file=file_path,
                schema_id=int(snapshot.schema_id),
            )


def _count_by_run(files: Iterable[ExpiredFile]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for f in files:
        if f.run_id is not None:
            counts[f.run_id] = counts.get(f.run_id, 0) + 1
    return counts
