"""A worker frozen *inside* the commit window (holding the per-table lock) does not stall its table.

The frozen run is parked at a fault point inside the commit transaction — ``before-commit`` (lock
held, fencing and snapshot search done, Iceberg commit not yet made) or ``after-commit`` (Iceberg
commit made, ledger not yet updated) — and SIGSTOPped there. Two other runs ingest into the same
table meanwhile: PostgreSQL ends the frozen session once it has been idle in its transaction for
``LockBounds.hold_seconds``, which frees the lock, so the others' first commit lands within
hold + wait + start-up slack (stated below), not "after it resumes". The frozen run is then
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
# The others' first commit after the freeze: the frozen session is ended after hold_seconds, a
# waiter notices within wait_seconds (then backs off ≤ 5 s), plus the start-up of two `icefloe run`
# processes and their first batch on a loaded 2-core machine.
OTHERS_COMMIT_WITHIN = BOUNDS.hold_seconds + BOUNDS.wait_seconds + 5 + 20


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

    others = [faulty.start() for _ in range(2)]

    def others_committed() -> bool:
        if not faulty.table_exists():
            return False
        batches = {
            (s.summary.additional_properties if s.summary else {}).get("icefloe.batch-id")
            for s in faulty.icefloe_snapshots()
        }
        return bool(batches - {str(frozen_batch)})

    faulty.wait_for(others_committed, timeout=OTHERS_COMMIT_WITHIN, what="another run's commit while one is frozen")
    waited = time.monotonic() - stopped_at
    print(f"first commit of the others {waited:.1f}s after the freeze (bound {OTHERS_COMMIT_WITHIN:.0f}s)")
    for proc in others:
        result = faulty.finish(proc)
        assert result.returncode == 0, result.describe()

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
