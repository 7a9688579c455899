"""`icefloe maintain` SIGKILLed around its compaction commit, with a batch of unknown outcome in the
recovery window: the snapshot search still finds that batch, nothing is lost or doubled."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.faults.conftest import FaultIngestion
    from tests.support.services import PutObjects

pytestmark = pytest.mark.faults
INGESTION = "events"  # the ingestion make_faulty defines

FILES, ROWS, PER_COMMIT = 40, 5, 5


def jsonl_file(first_id: int, count: int) -> bytes:
    return b"".join(json.dumps({"id": i}).encode() + b"\n" for i in range(first_id, first_id + count))


def _maintain(faulty: FaultIngestion, fault: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["icefloe", "maintain", INGESTION, "--json"],
        env=faulty._env(fault, None),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("point", ["maintenance-before-commit", "maintenance-after-commit"])
def test_sigkill_during_maintenance_keeps_every_batch_findable(
    make_faulty: Callable[..., FaultIngestion], put_objects: PutObjects, point: str
) -> None:
    faulty = make_faulty(files=FILES, rows=ROWS, max_files_per_commit=PER_COMMIT)
    assert faulty.run().returncode == 0  # FILES / PER_COMMIT small data files
    more = {f"in/more-{n:03d}.jsonl": jsonl_file(10_000 + n * ROWS, ROWS) for n in range(PER_COMMIT)}
    put_objects(faulty.bucket, more)
    faulty.rows_per_file.update({f"s3://{faulty.bucket}/{k}": ROWS for k in more})
    faulty.ids.update(10_000 + i for i in range(PER_COMMIT * ROWS))
    died = faulty.run(fault="after-commit")  # its batch committed, the ledger update lost: unknown outcome
    assert died.returncode == -signal.SIGKILL, died.describe()
    dead_batch = faulty.processing()
    assert len(dead_batch) == PER_COMMIT
    [landed] = faulty.snapshots_of_batch(dead_batch[0].batch_id)

    killed = _maintain(faulty, point)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    done = _maintain(faulty, None)  # a later pass finishes the work
    assert done.returncode == 0, done.stderr

    table = faulty.table()
    assert [s.snapshot_id for s in faulty.snapshots_of_batch(dead_batch[0].batch_id, table)] == [landed.snapshot_id]
    assert any(
        "icefloe.maintenance" in (s.summary.additional_properties if s.summary else {}) for s in table.snapshots()
    )
    faulty.wait_leases_expired()
    faulty.run_until_done()
    faulty.assert_exact()
    by_id = {f.id: f for f in faulty.files()}
    assert all(by_id[f.id].snapshot_id == landed.snapshot_id for f in dead_batch)  # found, not re-committed
