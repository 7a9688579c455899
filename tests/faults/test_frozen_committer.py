"""A worker frozen *inside* the commit window (holding the per-table lock) does not stall its table.

The frozen run is parked at a fault point inside the commit transaction — ``before-commit`` (lock
held, fencing and snapshot search done, Iceberg commit not yet made) or ``after-commit`` (Iceberg
commit made, ledger not yet updated) — and SIGSTOPped there. Two other runs ingest into the same
table meanwhile: PostgreSQL ends the frozen session once it has been idle in its transaction for
``LockBounds.hold_seconds`` (lease/2, at least 5 s), which frees the lock — asserted within that
bound plus polling slack, not "after it resumes" — and the others then commit every other batch. The frozen run is then
continued (SIGCONT) or killed (SIGKILL, never continued); either way the table ends exact: every
file once, every batch once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from icefloe.ledger import LockBounds

if TYPE_CHECKING:
    from tests.faults.conftest import FaultIngestion

LEASE_SECONDS = 3  # the fault tests' lease (conftest.LEASE_SECONDS)

pytestmark = pytest.mark.faults

FILES, ROWS, PER_COMMIT = 60, 5, 10
BOUNDS = LockBounds.for_lease(LEASE_SECONDS)
# PostgreSQL ends the frozen session hold_seconds after its last statement; allow its once-a-second
# timeout check and this test's polling on a loaded machine.
LOCK_RELEASED_WITHIN = BOUNDS.hold_seconds + 5


def _holder_parked(faulty: FaultIngestion) -> bool:
    """A session holds the table's commit lock while idle in its transaction: the parked run."""
    return bool(
        faulty.ledger(
            "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND a.state = 'idle in transaction' "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(:t, 0) LIMIT 1",
            t=faulty.table_identifier,
        )
    )


@pytest.mark.parametrize(
    ("point", "then"),
    [("before-commit", "continue"), ("after-commit", "continue"), ("before-commit", "kill")],
)
def test_a_worker_frozen_in_the_commit_window_does_not_stall_the_table(
    make_faulty: Callable[..., FaultIngestion], point: str, then: str
) -> None:
    faulty = make_faulty(files=FILES, rows=ROWS, max_files_per_commit=PER_COMMIT)
    frozen = faulty.start(fault=f"{point}:sleep=4")
    faulty.wait_for(
        lambda: frozen.poll() is not None or _holder_parked(faulty), timeout=60, what="the run parked in its commit"
    )
    assert frozen.poll() is None, faulty.finish(frozen).describe()
    os.kill(frozen.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    (frozen_batch,) = {f.batch_id for f in faulty.processing()}

    # The frozen holder loses the table lock within the bound, whatever else runs.
    faulty.wait_for(
        lambda: not _holder_parked(faulty), timeout=LOCK_RELEASED_WITHIN + 30, what="the frozen session to end"
    )
    released = time.monotonic() - stopped_at
    print(f"table lock released {released:.1f}s after the freeze (hold bound {BOUNDS.hold_seconds:.0f}s)")
    assert released <= LOCK_RELEASED_WITHIN

    # Others ingest into the same table meanwhile: everything but the frozen batch, committed.
    others = [faulty.start() for _ in range(2)]
    for proc in others:
        result = faulty.finish(proc)
        assert result.returncode == 0, result.describe()
    batches = {s.summary.additional_properties.get("icefloe.batch-id") for s in faulty.icefloe_snapshots() if s.summary}
    assert batches - {str(frozen_batch)}, "the other runs committed nothing while one was frozen"

    if then == "continue":
        os.kill(frozen.pid, signal.SIGCONT)
        resumed = faulty.finish(frozen)
        # It finds its session gone, is fenced off (or finds its batch landed) and ends cleanly.
        assert resumed.returncode in (0, 3), resumed.describe()
        assert "Traceback" not in resumed.stderr
    else:
        faulty.kill(frozen)

    faulty.run_until_done()
    faulty.assert_exact()
