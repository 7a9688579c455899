"""Kill ``icefloe run`` processes with SIGKILL at random moments, then finish with a clean run.

KILLS delays are drawn from a seeded RNG; up to CONCURRENT runs go at a time, each killed after its
delay, counted from when that run first holds a lease on a file (so the kill cannot fall before the
run has work). A run that ends by itself before its kill hands its delay to the next run, and more
files are seeded whenever little work is left, so every delay kills a run with work to do — on a
fast machine too. The first delay is 0: that kill certainly cuts a batch in flight. The others land
anywhere: staging, the commit's critical section, between batches, reconciliation — and other runs
go on meanwhile. Whatever was cut, the table ends exact.
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
LOW_WATER = 100  # files not yet SUCCESS below which more are seeded before a run starts


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

    def start() -> subprocess.Popen[str]:
        (pending,) = faulty.ledger("SELECT count(*) AS n FROM files WHERE status <> 'SUCCESS'")
        unlisted = len(faulty.rows_per_file) - faulty.ledger("SELECT count(*) AS n FROM files")[0].n
        if pending.n + unlisted < LOW_WATER:
            faulty.seed(FILES)
        return faulty.start()

    outcomes: list[int] = []
    running: dict[subprocess.Popen[str], tuple[float, float | None]] = {}  # proc → (delay, kill at)
    deadline = time.monotonic() + DEADLINE
    while delays or running:
        while delays and len(running) < CONCURRENT:
            running[start()] = (delays.pop(0), None)
        for proc, (delay, kill_at) in list(running.items()):
            if kill_at is None and proc.poll() is None and holds_a_lease(proc):
                running[proc] = (delay, kill_at := time.monotonic() + delay)
            if proc.poll() is None and (kill_at is None or time.monotonic() < kill_at):
                continue
            faulty.kill(proc)
            result = faulty.finish(proc)
            assert result.returncode in (0, -signal.SIGKILL), result.describe()
            outcomes.append(result.returncode)
            if result.returncode == 0:
                delays.append(delay)  # ended before its kill: the next run takes the kill
            del running[proc]
        assert time.monotonic() < deadline, f"kill loop still going after {DEADLINE:.0f}s: {outcomes}"
        time.sleep(0.05)

    # Some kill cut a batch: files left PROCESSING by a dead run, or already reconciled as lost
    # (a WorkerLost attempt in their history).
    lost = faulty.ledger("SELECT 1 FROM file_attempts WHERE error_type = 'WorkerLost' LIMIT 1")
    assert faulty.processing() or lost, f"no kill interrupted a batch: {dict(faulty.statuses())}"

    faulty.run_until_done()
    faulty.assert_exact()
