"""The worker loop: reconcile, discover, then claim → stage → commit batches until none is left.

`icefloe run` drives one pass of it synchronously; several processes may run it on one
ingestion at once: claims, fencing and the commit protocol keep every file exactly once.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from sqlalchemy import Engine, text

from icefloe import commit, events, faults, ledger, logs, metrics, retry, runs, schema_changes
from icefloe.discovery import DiscoveryCounts, Filter, discover, plan_listing
from icefloe.engines import Engine as StagingEngine
from icefloe.engines import StagedBatch, load_engine, warm_up
from icefloe.errors import CommitError, IcefloeError, LeaseLostError, LedgerUnavailableError
from icefloe.ledger import Batch, LockBounds
from icefloe.models import Ingestion, Run
from icefloe.runtime import Runtime
from icefloe.stores import parse_source

log = logging.getLogger(__name__)

# How long a run waits for its ledger to come back before it gives up (FAILED).
LEDGER_PATIENCE_SECONDS = 600.0


@dataclass
class Progress:
    """What a progress display needs; called after discovery pages and after each batch."""

    phase: str  # "discovering" | "processing" | "done"
    discovered: int = 0
    claimable: int = 0
    succeeded: int = 0
    failed: int = 0
    records: int = 0
    bytes_read: int = 0


ProgressCallback = Callable[[Progress], None]


class _Beat:
    """A daemon thread calling :meth:`beat` every ``interval`` seconds while the ``with`` block runs;
    :meth:`beat` returns False to stop beating."""

    def __init__(self, name: str, interval: float) -> None:
        self.interval = interval
        self._done = threading.Event()
        # The thread logs with the run context of whoever made the beat (threads start without it).
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._done.wait(self.interval):
            if not self.beat():
                return

    def beat(self) -> bool:
        raise NotImplementedError


class Heartbeat(_Beat):
    """Extends the lease of a batch every third of the lease; sets ``lost`` when it cannot.

    With ``abort`` it wakes every second to notice a shutdown whose grace period is over.
    """

    def __init__(self, db: Engine, batch: Batch, lease_seconds: int, abort: threading.Event | None = None) -> None:
        super().__init__(f"heartbeat-{batch.batch_id}", min(lease_seconds / 3, 1.0) if abort else lease_seconds / 3)
        self.db = db
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.abort = abort
        self.lost = threading.Event()
        self._last_ok = time.monotonic()

    def beat(self) -> bool:
        if self.abort is not None and self.abort.is_set():
            self.lost.set()  # shutdown grace period over: give the batch up
            return False
        if time.monotonic() - self._last_ok < self.lease_seconds / 3:
            return True
        try:
            with self.db.begin() as conn:
                owned = ledger.heartbeat(conn, self.batch, self.lease_seconds)
        except Exception as exc:  # database away: keep trying until the lease would be gone
            log.warning("heartbeat failed for batch %s: %s", self.batch.batch_id, exc)
            if time.monotonic() - self._last_ok > self.lease_seconds:
                self.lost.set()
                return False
            return True
        self._last_ok = time.monotonic()
        if owned < len(self.batch.files):
            log.warning("lease lost on %d file(s) of batch %s", len(self.batch.files) - owned, self.batch.batch_id)
            self.lost.set()
            return False
        return True


def _settle_failures(rt: Runtime, ingestion: Ingestion, batch: Batch, staged: StagedBatch) -> None:
    """Record the batch's failed, held and changed files before the rest is committed."""
    if not staged.failed and not staged.changed and not staged.held:
        return
    with rt.db.begin() as conn:
        schema_changes.hold(conn, ingestion.id, ingestion.table_identifier, staged.held, batch.batch_id)
        for failed in staged.failed:
            ledger.mark_failed(
                conn,
                failed.file,
                batch.batch_id,
                error_type=failed.error.error_type,
                error_message=str(failed.error),
                bytes_read=failed.bytes_read,
                duration_ms=failed.duration_ms,
            )
        ledger.release(
            conn,
            staged.changed,
            batch.batch_id,
            wait_for_rediscovery=True,
            reason="changed after listing; the next discovery picks up the new version",
        )


def _stage(rt: Runtime, ingestion: Ingestion, engine: StagingEngine, batch: Batch, heartbeat: Heartbeat) -> StagedBatch:
    """Stage the batch and settle its failed files, waiting out ledger outages.

    The default catalog lives in the ledger's database, so an outage can hit staging anywhere. The
    files stay ours while the heartbeat holds their lease (it keeps trying through the outage), so
    staging is simply redone once the database answers; past the lease the batch is given up.
    """
    attempt = 0
    while True:
        try:
            staged = engine.stage(batch, heartbeat.lost)
            faults.point("after-write")
            _settle_failures(rt, ingestion, batch, staged)
            return staged
        except LedgerUnavailableError as exc:
            attempt += 1
            delay = retry.LEDGER_WAIT.delay(attempt)
            log.warning("%s; staging batch %s again in %.0fs", exc, batch.batch_id, delay)
            if heartbeat.lost.wait(delay):
                raise LeaseLostError(f"lease on batch {batch.batch_id} lost during a ledger outage") from exc


def process_batches(
    rt: Runtime,
    ingestion: Ingestion,
    run: Run,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    abort: threading.Event | None = None,
) -> None:
    """Claim, stage and commit batches until nothing is claimable.

    ``stop``: claim no new batch (graceful shutdown); ``abort``: give up the current batch too —
    its files are released unpenalised, nothing of it is committed.
    """
    # Loaded with the first batch: a run with nothing to ingest never imports the engine stack.
    engine: StagingEngine | None = None
    lease = rt.settings.lease_seconds
    bounds = LockBounds.for_lease(lease)
    state = Progress("processing")
    with rt.db.connect() as conn:
        state.claimable = ledger.count_claimable(conn, ingestion.id, ingestion.max_retries)
    if progress:
        progress(state)
    while (stop is None or not stop.is_set()) and runs.accepting_batches(rt.db, run.id):
        with rt.db.begin() as conn:
            batch = ledger.claim_batch(
                conn,
                ingestion_id=ingestion.id,
                run_id=run.id,
                owner=rt.settings.worker_id,
                lease_seconds=lease,
                max_files=ingestion.max_files_per_commit,
                max_bytes=ingestion.max_bytes_per_commit,
                max_retries=ingestion.max_retries,
            )
        if batch is None:
            break
        faults.point("after-claim")
        with logs.run_context(run_id=run.id, ingestion=ingestion.name, batch_id=str(batch.batch_id)):
            log.info("claimed batch of %d file(s)", len(batch.files))
            try:
                if engine is None:
                    engine = load_engine(ingestion.engine, rt, ingestion)
                with Heartbeat(rt.db, batch, lease, abort) as heartbeat:
                    staged = _stage(rt, ingestion, engine, batch, heartbeat)
                    started = time.monotonic()
                    result = commit.commit_batch(
                        rt.db,
                        rt.catalog,
                        engine,
                        table_identifier=ingestion.table_identifier,
                        batch=batch,
                        staged=staged,
                        run_id=run.id,
                        replace_changed=ingestion.on_change == "replace",
                        bounds=bounds,
                        ingestion=ingestion.name,
                        ingestion_id=ingestion.id,
                        quarantined=ingestion.on_bad_record == "quarantine",
                    )
                    metrics.COMMIT_LATENCY.labels(ingestion.name).observe(time.monotonic() - started)
            except LeaseLostError as exc:
                # Lost (fenced: releasing is a no-op) or given up on shutdown (released unpenalised).
                with rt.db.begin() as conn:
                    released = ledger.release(conn, batch.files, batch.batch_id)
                log.warning("%s; %d file(s) released", exc, released)
                continue
            except (IcefloeError, OSError) as exc:
                if isinstance(exc, CommitError | LedgerUnavailableError):
                    raise  # maybe committed: the files stay leased; reconciliation decides
                # Staging failed for a reason outside the files (warehouse or catalog unreachable):
                # nothing was committed, so give the files back unpenalised and fail the run.
                with rt.db.begin() as conn:
                    ledger.release(conn, batch.files, batch.batch_id)
                raise
            _record(rt, ingestion, run, staged, result, state)
        if progress:
            progress(state)


def _record(
    rt: Runtime, ingestion: Ingestion, run: Run, staged: StagedBatch, result: commit.CommitResult, state: Progress
) -> None:
    """Run counters, metrics and progress after a committed batch."""
    runs.add(
        rt.db,
        run.id,
        files_succeeded=result.succeeded,
        files_failed=len(staged.failed),
        records_ingested=staged.records,
        records_rejected=staged.rejected,
        bytes_read=staged.bytes_read,
        snapshots_committed=result.snapshots,
    )
    metrics.FILES_INGESTED.labels(ingestion.name).inc(result.succeeded)
    metrics.RECORDS_INGESTED.labels(ingestion.name).inc(staged.records)
    metrics.BYTES_INGESTED.labels(ingestion.name).inc(staged.bytes_read)
    for failed in staged.failed:
        metrics.FILES_FAILED.labels(ingestion.name, failed.error.error_type).inc()
    state.succeeded += result.succeeded
    state.failed += len(staged.failed)
    state.records += staged.records
    state.bytes_read += staged.bytes_read


def run_ingestion(
    rt: Runtime,
    ingestion: Ingestion,
    *,
    trigger: str = "cli",
    progress: ProgressCallback | None = None,
    full_listing: bool = False,
) -> Run:
    """One synchronous run (`icefloe run`): a new run record, executed here and now;
    ``full_listing``: a full reconciling listing whatever the ingestion's listing mode."""
    run = runs.start(rt.db, ingestion.id, trigger=trigger, worker_id=rt.settings.worker_id, full_listing=full_listing)
    with logs.run_context(run_id=run.id, ingestion=ingestion.name):
        return execute_run(rt, ingestion, run, progress=progress)


def execute_run(
    rt: Runtime,
    ingestion: Ingestion,
    run: Run,
    *,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    abort: threading.Event | None = None,
) -> Run:
    """Reconcile, discover, process; returns the finished run record.

    Errors of single files end the run PARTIAL; an error of the run itself (source unreachable,
    catalog down) ends it FAILED with the error's one line. When ``stop`` is set the run is
    handed back to the queue unfinished (graceful shutdown) and returned as it stands.
    """
    # The caller's stop (shutdown) and this run's own (takeover, cancel) both end the batch loop;
    # the run heartbeat relays the former into the latter.
    run_stop = threading.Event()
    me = rt.settings.worker_id
    bounds = LockBounds.for_lease(rt.settings.lease_seconds)
    try:
        with RunHeartbeat(rt, run.id, run_stop, shutdown=stop) as run_heartbeat:
            discovered = False
            patience = time.monotonic() + LEDGER_PATIENCE_SECONDS
            while True:
                try:
                    # Every step is idempotent: after an outage the run simply goes through them again.
                    commit.reconcile_expired_leases(rt.db, lambda: rt.catalog, ingestion, bounds, run_id=run.id)
                    if not discovered:
                        _discover(rt, ingestion, run, progress)
                        discovered = True
                    _process_until_settled(rt, ingestion, run, progress, run_stop, abort)
                    break
                except LedgerUnavailableError as exc:
                    # A commit that gave up on the ledger leaves its batch leased: once the lease
                    # expires, the resumed run reconciles it (landed or not) like any other.
                    if time.monotonic() > patience:
                        raise
                    if run_stop.is_set():
                        break  # shutdown, takeover or cancel: handled below once the ledger answers
                    log.warning("ledger unavailable, run %s resumes when it answers: %s", run.id, exc)
                    _wait_for_ledger(rt, run_stop, patience)
            if run_heartbeat.cancelled.is_set() or runs.get(rt.db, run.id).cancel_requested:
                return runs.finish(
                    rt.db, run.id, status="CANCELLED", error_message="cancelled on request", worker_id=me
                )
            if run_stop.is_set():
                runs.requeue(rt.db, run.id, rt.settings.worker_id)
                return runs.get(rt.db, run.id)
        finished = runs.settle(rt.db, ingestion.id, run.id, worker_id=me)
    except IcefloeError as exc:
        finished = runs.finish(rt.db, run.id, status="FAILED", error_message=str(exc), worker_id=me)
        log.error("run %s of %s failed: %s", run.id, ingestion.name, finished.error_message, extra={"run_id": run.id})
    except BaseException as exc:
        finished = runs.finish(
            rt.db, run.id, status="FAILED", error_message=f"{type(exc).__name__}: {exc}", worker_id=me
        )
        if not isinstance(exc, Exception) or runs.exists(rt.db, run.id):
            raise
        # The ingestion was deleted under the run (its ledger rows with it): say so, in one line.
        log.error("run %s of %s failed: %s", run.id, ingestion.name, finished.error_message, extra={"run_id": run.id})
    if finished.started_at and finished.finished_at:
        duration = (finished.finished_at - finished.started_at).total_seconds()
        metrics.RUN_DURATION.labels(ingestion.name, finished.status).observe(duration)
    return finished


def _discover(rt: Runtime, ingestion: Ingestion, run: Run, progress: ProgressCallback | None) -> None:
    def on_page(counts: DiscoveryCounts) -> None:
        faults.point("during-discovery")
        if counts.new or counts.changed:
            warm_up(ingestion.engine, rt.settings, counts.new + counts.changed)  # while the listing goes on
        if progress:
            progress(Progress("discovering", discovered=counts.listed))

    if ingestion.discovery == "events":
        events.discover_run(rt, ingestion, run, on_page)
        return
    location = parse_source(ingestion.source)
    flt = Filter(prefix=location.prefix, pattern=ingestion.pattern, since=ingestion.since)
    with rt.db.connect() as conn:
        state = ledger.listing_state(conn, ingestion.id, location.root, ingestion.full_listing_every_seconds)
    plan = plan_listing(
        mode=ingestion.listing,
        full_requested=run.listing == "full",
        state=state,
        prefix=location.prefix,
        lookback_seconds=ingestion.relist_lookback_seconds,
    )
    store = rt.store(location)
    counts = discover(rt.db, store, ingestion_id=ingestion.id, location=location, flt=flt, plan=plan, on_page=on_page)
    runs.add(
        rt.db,
        run.id,
        files_discovered=counts.listed,
        files_new=counts.new,
        files_changed=counts.changed,
        files_skipped=counts.skipped,
        list_requests=counts.list_requests,
        files_missed_by_incremental=counts.missed,
    )
    runs.set_listing(rt.db, run.id, "full" if plan.full else "incremental")
    metrics.LIST_REQUESTS.labels(ingestion.name).inc(counts.list_requests)
    if counts.missed:
        metrics.FILES_MISSED_BY_INCREMENTAL.labels(ingestion.name).inc(counts.missed)
        log.warning(
            "the full listing found %d file(s) the incremental listing missed (keys at or below %s)",
            counts.missed,
            plan.missed_below,
            extra={"run_id": run.id, "ingestion": ingestion.name},
        )


def _process_until_settled(
    rt: Runtime,
    ingestion: Ingestion,
    run: Run,
    progress: ProgressCallback | None,
    stop: threading.Event,
    abort: threading.Event | None,
) -> None:
    """Process batches until no file claimed for this run is in flight anywhere.

    Batches that helping workers claimed for the run are waited for while their leases live, so
    the run's counters include them; when a helper dies its lease expires, its files are reconciled
    and processed here — the run never ends SUCCESS with files nobody is ingesting.
    """
    bounds = LockBounds.for_lease(rt.settings.lease_seconds)
    while not stop.is_set():
        process_batches(rt, ingestion, run, progress, stop=stop, abort=abort)
        while True:
            with rt.db.connect() as conn:
                live, expired = ledger.run_in_flight(conn, ingestion.id, run.id)
            if expired:
                commit.reconcile_expired_leases(rt.db, lambda: rt.catalog, ingestion, bounds, run_id=run.id)
                break  # what was requeued is claimable: process it
            if not live or stop.wait(0.5):
                return


def _wait_for_ledger(rt: Runtime, stop: threading.Event, deadline: float) -> None:
    """Until the ledger's database answers (or ``stop``, or ``deadline``), backing off up to 10 s."""
    attempt = 1
    while not stop.wait(retry.LEDGER_WAIT.delay(attempt)) and time.monotonic() < deadline:
        try:
            with rt.db.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except LedgerUnavailableError:
            attempt += 1


class RunHeartbeat(_Beat):
    """Keeps a run's heartbeat fresh; sets ``stop`` if another worker took the run over, or
    ``cancelled`` (and ``stop``) when a cancel was requested (`POST /runs/{id}/cancel`)."""

    def __init__(
        self, rt: Runtime, run_id: int, stop: threading.Event, shutdown: threading.Event | None = None
    ) -> None:
        # Beat at least every 2 s, so a cancel or shutdown takes effect between batches.
        super().__init__(f"run-heartbeat-{run_id}", min(2.0, rt.settings.lease_seconds / 3))
        self.rt = rt
        self.run_id = run_id
        self.stop = stop
        self.shutdown = shutdown
        self.cancelled = threading.Event()

    def __enter__(self) -> Self:
        self.beat()
        return super().__enter__()

    def beat(self) -> bool:
        if self.shutdown is not None and self.shutdown.is_set():
            self.stop.set()
            return False
        try:
            state = runs.heartbeat(self.rt.db, self.run_id, self.rt.settings.worker_id)
        except Exception as exc:  # database away: the batch heartbeats decide about leases
            log.warning("run heartbeat failed: %s", exc, extra={"run_id": self.run_id})
            return True
        if state == "ok":
            return True
        if state == "cancel":
            log.info("run %s: cancel requested; stopping after the batch in flight", self.run_id)
            self.cancelled.set()
        elif state == "gone":
            log.warning("run %s no longer exists: its ingestion was deleted; stopping", self.run_id)
        else:
            log.warning("run %s was taken over by another worker", self.run_id)
        self.stop.set()
        return False
