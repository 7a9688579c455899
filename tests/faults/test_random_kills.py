"""Kill ``icefloe run`` processes with SIGKILL at random moments, then finish with a clean run.

KILLS runs are started, up to CONCURRENT at a time; each is killed after a delay drawn from a
seeded RNG, counted from when that run first holds a lease on a file (so the kill cannot fall
before the run has work, on a fast machine where the first runs ingest everything). The first
delay is 0: that kill certainly cuts a batch in flight. The others land anywhere: staging, the
commit's critical section, between batches, reconciliation — and other runs go on meanwhile.
Whatever was cut, the table ends exact.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.faults.conftest import FaultIngestion

pytestmark = pytest.mark.faults

FILES, ROWS, PER_COMMIT = 300, 4, 20
KILLS, CONCURRENT = 6, 3
MAX_DELAY = 3.0
SEED = 20251127
DEADLINE = 240.0


def test_random_sigkills_then_a_clean_run_is_exact(make_faulty: Callable[..., FaultIngestion]) -> None:
    # Every kill may count an attempt for the files in flight: leave room for all of them.
    faulty = make_faulty(files=FILES, rows=ROWS, max_files_per_commit=PER_COMMIT, max_retries=KILLS + 4)
    rng = random.Random(SEED)
    delays = [0.0] + [rng.uniform(0.0, MAX_DELAY) for _ in range(KILLS - 1)]

    def holds_a_lease(proc: subprocess.Popen[str]) -> bool:
        # Worker ids are host:pid:suffix.
        return bool(
            faulty.ledger(
                "SELECT 1 FROM files WHERE status = 'PROCESSING' AND lease_owner LIKE :w LIMIT 1",
                w=f"%:{proc.pid}:%",
            )
        )

    outcomes: list[int] = []
    running: dict[subprocess.Popen[str], tuple[float, float | None]] = {}  # proc → (delay, kill at)
    deadline = time.monotonic() + DEADLINE
    while delays or running:
        while delays and len(running) < CONCURRENT:
            running[faulty.start()] = (delays.pop(0), None)
        for proc, (delay, kill_at) in list(running.items()):
            if kill_at is None and proc.poll() is None and holds_a_lease(proc):
                running[proc] = (delay, kill_at := time.monotonic() + delay)
            if proc.poll() is None and (kill_at is None or time.monotonic() < kill_at):
                continue
            faulty.kill(proc)
            result = faulty.finish(proc)
            assert result.returncode in (0, -signal.SIGKILL), result.describe()
            outcomes.append(result.returncode)
            del running[proc]
        assert time.monotonic() < deadline, f"kill loop still going after {DEADLINE:.0f}s"
        time.sleep(0.05)

    assert outcomes.count(-signal.SIGKILL) >= KILLS // 2, f"too few kills landed to test anything: {outcomes}"
    # Some kill cut a batch: files left PROCESSING by a dead run, or already reconciled as lost
    # (a WorkerLost attempt in their history).
    lost = faulty.ledger("SELECT 1 FROM file_attempts WHERE error_type = 'WorkerLost' LIMIT 1")
    assert faulty.processing() or lost, f"no kill interrupted a batch: {dict(faulty.statuses())}"

    faulty.run_until_done()
    faulty.assert_exact()
