"""`icefloe worker`: the long-running process that executes queued runs, keeps schedules, reconciles
dead workers' leases, helps other workers' runs, and sends alerts.

Any number of these processes, on any number of machines, share one ledger: every decision they
share is a row lock (``SKIP LOCKED``), an advisory lock or a unique key in PostgreSQL.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from icefloe import cleanup, commit, ingestions, ledger, logs, maintenance, runs, scheduler, worker
from icefloe.ledger import LockBounds
from icefloe.models import Ingestion, Run
from icefloe.runtime import Runtime

log = logging.getLogger(__name__)


class WorkerProcess:
    """``concurrency`` slots that each execute one run (or help one) at a time, plus housekeeping."""

    def __init__(
        self,
        rt: Runtime,
        *,
        concurrency: int = 1,
        poll_seconds: float = 2.0,
        grace_seconds: float = 30.0,
        housekeeping: Callable[[Runtime], None] | None = None,
    ) -> None:
        self.rt = rt
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.extra_housekeeping = housekeeping
        self.stop = threading.Event()  # claim nothing new
        self.abort = threading.Event()  # grace period over: give up batches in flight

    # ------------------------------------------------------------------ lifecycle

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            log.warning("received %s: stopping (grace %ss)", signal.Signals(signum).name, self.grace_seconds)
            self.stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> None:
        """Work until :attr:`stop` is set, then finish or release the batches in flight and return."""
        log.info("worker %s started with %d slot(s)", self.rt.settings.worker_id, self.concurrency)
        threads = [threading.Thread(target=self._every, args=(self.housekeeping,), name="housekeeping", daemon=True)]
        if self.extra_housekeeping is not None:
            # Its own thread: a slow alert receiver must not delay schedules and lease cleanup.
            extra = self.extra_housekeeping
            threads.append(
                threading.Thread(target=self._every, args=(lambda: extra(self.rt),), name="alerts", daemon=True)
            )
        # Its own thread: compacting a table takes a while and must not delay lease reconciliation.
        threads.append(threading.Thread(target=self._every, args=(self.maintain_due,), name="maintenance", daemon=True))
        # Its own thread too: a clean-up pass makes one or two S3 calls per file.
        threads.append(threading.Thread(target=self._every, args=(self.cleanup_due,), name="cleanup", daemon=True))
        threads += [
            threading.Thread(target=self._slot_loop, name=f"slot-{n}", daemon=True) for n in range(self.concurrency)
        ]
        for t in threads:
            t.start()
        while not self.stop.wait(0.5):
            pass
        deadline = time.monotonic() + self.grace_seconds
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            log.warning("grace period over: releasing the batches in flight")
            self.abort.set()
            for t in threads:
                t.join(timeout=self.rt.settings.lease_seconds)
        log.info("worker %s stopped", self.rt.settings.worker_id)

    # ------------------------------------------------------------------ slots

    def _slot_loop(self) -> None:
        while not self.stop.is_set():
            try:
                worked = self.work_once()
            except Exception:
                log.exception("worker slot error (continuing)")
                worked = False
            if not worked:
                self.stop.wait(self.poll_seconds)

    def work_once(self) -> bool:
        """Execute one queued run, or help a running one; False when there was nothing to do."""
        run = runs.claim_pending(self.rt.db, self.rt.settings.worker_id, self.rt.settings.lease_seconds)
        if run is not None:
            ingestion = ingestions.get(self.rt.db, run.ingestion_id)
            with logs.run_context(run_id=run.id, ingestion=ingestion.name):
                log.info("executing run %s of %s", run.id, ingestion.name)
                worker.execute_run(self.rt, ingestion, run, stop=self.stop, abort=self.abort)
            return True
        helped = self._run_to_help()
        if helped is None:
            return False
        ingestion, run = helped
        worker.process_batches(self.rt, ingestion, run, stop=self.stop, abort=self.abort)
        return True

    def _run_to_help(self) -> tuple[Ingestion, Run] | None:
        """A RUNNING run of an active ingestion that still has claimable files."""
        with self.rt.db.connect() as conn:
            found = ledger.run_needing_help(conn)
        if found is None:
            return None
        run_id, ingestion_id = found
        return ingestions.get(self.rt.db, ingestion_id), runs.get(self.rt.db, run_id)

    # ------------------------------------------------------------------ housekeeping

    def _every(self, task: Callable[[], None]) -> None:
        """Call ``task`` every few seconds (a third of the lease, 1 to 5 s) until stopped."""
        interval = max(1.0, min(5.0, self.rt.settings.lease_seconds / 3))
        while not self.stop.is_set():
            try:
                task()
            except Exception:
                log.exception("housekeeping error (continuing)")
            self.stop.wait(interval)

    def housekeeping(self) -> None:
        """Schedules and reconciliation of expired leases: cheap, idempotent, any worker."""
        scheduler.enqueue_due_runs(self.rt.db)
        for ingestion in ingestions.list_all(self.rt.db):
            if ingestion.status == "ACTIVE":
                with logs.run_context(ingestion=ingestion.name):
                    commit.reconcile_expired_leases(
                        self.rt.db,
                        lambda: self.rt.catalog,
                        ingestion,
                        LockBounds.for_lease(self.rt.settings.lease_seconds),
                    )

    def maintain_due(self) -> None:
        """``icefloe maintain`` of every table whose ``maintain_every`` is due, once across workers."""
        for ingestion_id in scheduler.take_due_maintenance(self.rt.db):
            if self.stop.is_set():
                return
            ingestion = ingestions.get(self.rt.db, ingestion_id)
            try:
                report = maintenance.maintain(
                    self.rt.db,
                    self.rt.catalog,
                    ingestion.table_identifier,
                    lease_seconds=self.rt.settings.lease_seconds,
                    retention_seconds=self.rt.settings.snapshot_retention_seconds,
                )
            except Exception as exc:  # the next interval tries again; ingestion goes on meanwhile
                log.error("maintenance of %s failed: %s", ingestion.name, exc)
                continue
            c = report["compaction"]
            log.info(
                "maintained %s: %d small files rewritten into %d, %d snapshots expired, %d orphans removed",
                ingestion.table_identifier,
                c["files_rewritten"],
                c["files_written"],
                report["expiry"]["snapshots_expired"],
                report["orphans"]["orphans_removed"],
            )

    def cleanup_due(self) -> None:
        """The source clean-up (``--after-ingest``) of every ingestion whose pass is due, once across workers."""
        for ingestion_id in cleanup.take_due_cleanups(self.rt.db):
            if self.stop.is_set():
                return
            ingestion = ingestions.get(self.rt.db, ingestion_id)
            try:
                report = cleanup.clean(
                    self.rt.db, self.rt.catalog, self.rt.s3, ingestion, stores=self.rt.store, stop=self.stop
                )
            except Exception as exc:  # the next interval tries again
                log.error("clean-up of %s failed: %s", ingestion.name, exc)
                continue
            if report.cleaned or report.failed:
                log.info(
                    "cleaned up %d source file(s) of %s (%s), %d failed",
                    report.cleaned,
                    ingestion.name,
                    report.action,
                    report.failed,
                )
