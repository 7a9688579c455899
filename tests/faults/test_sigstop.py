"""A run paused (SIGSTOP) past its lease is fenced: once resumed it commits nothing stale.

The paused run holds a claimed batch (stopped right after the claim, or after its data files are
written). Its heartbeats stop with it; the lease expires; a second run reconciles the batch (in no
snapshot: claimable again), ingests everything and ends. Then the paused run resumes (SIGCONT): its
lease token is no longer current, so its commit must find itself fenced off and add nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.faults.conftest import FaultIngestion

pytestmark = pytest.mark.faults

FILES, ROWS, PER_COMMIT = 100, 5, 20
PAUSE_AT = 10.0  # seconds the fault point holds the run: time enough to SIGSTOP it there


@pytest.mark.parametrize("point", ["after-claim", "after-write"])
def test_run_stopped_past_its_lease_commits_nothing_when_resumed(
    make_faulty: Callable[..., FaultIngestion], point: str
) -> None:
    faulty = make_faulty(files=FILES, rows=ROWS, max_files_per_commit=PER_COMMIT)
    warehouse = Path(faulty.env["ICEFLOE_HOME"]) / "warehouse"

    stale = faulty.start(fault=f"{point}:sleep={PAUSE_AT}")
    batch = faulty.wait_for(lambda: stale.poll() is not None or faulty.processing(), timeout=60, what="the first claim")
    assert stale.poll() is None, faulty.finish(stale).describe()
    if point == "after-write":
        faulty.wait_for(
            lambda: stale.poll() is not None or any(warehouse.rglob("*.parquet")),
            timeout=30,
            what="the paused run's data files",
        )
    time.sleep(0.5)  # into the pause (the point follows the claim / the write at once)
    faulty.stop_between_transactions(stale)
    try:
        # Stopped with its batch claimed and uncommitted.
        (batch_id,) = {f.batch_id for f in batch}
        assert len(batch) == PER_COMMIT
        assert [f.id for f in faulty.processing()] == [f.id for f in batch]
        assert not faulty.table_exists() or not faulty.snapshots_of_batch(batch_id)

        # Its lease expires (no heartbeats from a stopped process); another run takes over.
        faulty.wait_leases_expired()
        takeover = faulty.run()
        assert takeover.returncode == 0, takeover.describe()
        assert takeover.summary["files_succeeded"] == FILES
        assert faulty.all_succeeded()
        before = [s.snapshot_id for s in faulty.table().metadata.snapshots]
    finally:
        os.kill(stale.pid, signal.SIGCONT)

    resumed = faulty.finish(stale)
    assert resumed.returncode == 0, resumed.describe()
    assert resumed.summary["files_succeeded"] == 0
    assert resumed.summary["snapshots_committed"] == 0

    table = faulty.assert_exact()
    assert [s.snapshot_id for s in table.metadata.snapshots] == before, "the resumed run committed"
    assert not faulty.snapshots_of_batch(batch_id, table)
    by_id = {f.id: f for f in faulty.files()}
    assert all(by_id[f.id].retry_count == 1 for f in batch)  # the takeover counted one lost attempt
