"""Heartbeats: daemon threads that keep a batch's lease and a run's ownership fresh while it works."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from typing import Self

from sqlalchemy import Engine

from icefloe import ledger, runs
from icefloe.ledger import Batch
from icefloe.runtime import Runtime

log = logging.getLogger(__name__)


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
