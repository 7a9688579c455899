"""The in-process worker of ``icefloe serve --with-worker``: one thread that executes queued runs.

A stand-in until ``icefloe worker`` runs beside the API: it only calls the worker's public pair,
:func:`icefloe.runs.claim_pending` then :func:`icefloe.worker.execute_run`, so a real worker process
replaces it without a change anywhere else (both may even run together: claims use SKIP LOCKED).

Stopping it (graceful shutdown) sets ``stop``: the run in progress claims no new batch, its batch in
flight commits, and the run goes back to the queue for the next worker. A run still busy after
``grace_seconds`` is abandoned to the leases: its files are reconciled once they expire.
"""

from __future__ import annotations

import logging
import threading

from icefloe import ingestions, logs, runs, worker
from icefloe.runtime import Runtime
from icefloe.settings import Settings

log = logging.getLogger(__name__)


class EmbeddedWorker:
    """Polls the run queue every ``poll_seconds`` and executes what it claims, one run at a time."""

    def __init__(self, settings: Settings, *, poll_seconds: float = 1.0) -> None:
        # Its own runtime (connection pool, catalog, S3 client): API traffic cannot starve it.
        # The app's runtime has migrated the ledger already.
        self.rt = Runtime.open(settings, migrate=False)
        self.poll_seconds = poll_seconds
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="icefloe-embedded-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("in-process worker %s started", self.rt.settings.worker_id)

    def stop(self, grace_seconds: float) -> None:
        self.stop_event.set()
        self._thread.join(grace_seconds)
        if self._thread.is_alive():
            log.warning("in-process worker still busy after %.0fs; leaving its leases to expire", grace_seconds)
        self.rt.close()

    def _loop(self) -> None:
        settings = self.rt.settings
        while not self.stop_event.is_set():
            try:
                run = runs.claim_pending(self.rt.db, settings.worker_id, settings.lease_seconds)
                if run is None:
                    self.stop_event.wait(self.poll_seconds)
                    continue
                ingestion = ingestions.get(self.rt.db, run.ingestion_id)
                with logs.run_context(run_id=run.id, ingestion=ingestion.name):
                    log.info("executing run %s of %s", run.id, ingestion.name)
                    done = worker.execute_run(self.rt, ingestion, run, stop=self.stop_event)
                    log.info("run %s of %s: %s", done.id, ingestion.name, done.status)
            except Exception:
                log.exception("in-process worker: unexpected error; retrying")
                self.stop_event.wait(self.poll_seconds)
