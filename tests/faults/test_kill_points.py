"""SIGKILL ``icefloe run`` at each named step of the ledger protocol, then let later runs finish.

The first run dies at the fault point (``ICEFLOE_FAULT_POINT``, returncode -9); once its lease
expired, the next run reconciles the dead worker's batch by the snapshot search and finishes the
rest. Whatever the step, the table holds every seeded id exactly once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.faults.conftest import FaultIngestion

pytestmark = pytest.mark.faults

FILES, ROWS, PER_COMMIT = 100, 5, 20


@pytest.mark.parametrize("point", ["after-claim", "after-write", "before-commit", "after-commit", "during-discovery"])
def test_sigkill_at_a_fault_point_then_rerun_is_exact(make_faulty: Callable[..., FaultIngestion], point: str) -> None:
    faulty = make_faulty(files=FILES, rows=ROWS, max_files_per_commit=PER_COMMIT)

    died = faulty.run(fault=point)
    assert died.returncode == -signal.SIGKILL, died.describe()

    dead_batch = faulty.processing()
    landed_id: int | None = None
    if point == "during-discovery":
        # Killed once the first listing page was recorded: nothing claimed, nothing committed.
        assert not dead_batch
        assert faulty.statuses() == {"DISCOVERED": FILES}
    else:
        # The dead worker holds one batch; its lease will expire.
        assert len(dead_batch) == PER_COMMIT
        assert len({f.batch_id for f in dead_batch}) == 1
        landed = faulty.snapshots_of_batch(dead_batch[0].batch_id) if faulty.table_exists() else []
        if point == "after-commit":
            # Between the Iceberg commit and the ledger update: the batch is in the table only.
            assert len(landed) == 1, "the dead worker's commit should be in the table"
            landed_id = landed[0].snapshot_id
            assert [s.snapshot_id for s in faulty.icefloe_snapshots()] == [landed_id]
        else:
            assert not landed

    results = faulty.run_until_done()

    table = faulty.assert_exact()
    by_id = {f.id: f for f in faulty.files()}
    if point == "after-commit":
        # Reconciled from the snapshots: SUCCESS with the dead worker's snapshot, no attempt
        # counted, no second commit of it (no duplicate rows, no extra snapshot for that batch).
        for f in dead_batch:
            assert (by_id[f.id].status, by_id[f.id].snapshot_id) == ("SUCCESS", landed_id)
            assert by_id[f.id].retry_count == 0
        assert [s.snapshot_id for s in faulty.snapshots_of_batch(dead_batch[0].batch_id, table)] == [landed_id]
        assert sum(r.summary["files_succeeded"] for r in results) == FILES - PER_COMMIT
        assert sum(r.summary["records_ingested"] for r in results) == (FILES - PER_COMMIT) * ROWS
        assert sum(r.summary["snapshots_committed"] for r in results) == FILES // PER_COMMIT - 1
    else:
        # Reconciled as lost (in no snapshot): claimable again, the crash counted as an attempt.
        assert all(by_id[f.id].retry_count == 1 for f in dead_batch)
        assert not dead_batch or not faulty.snapshots_of_batch(dead_batch[0].batch_id, table)
        assert sum(r.summary["files_succeeded"] for r in results) == FILES
        assert sum(r.summary["records_ingested"] for r in results) == FILES * ROWS
        assert sum(r.summary["snapshots_committed"] for r in results) == FILES // PER_COMMIT
    assert len(faulty.icefloe_snapshots(table)) == FILES // PER_COMMIT
