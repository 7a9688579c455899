"""SIGKILL ``icefloe run --on-bad-record quarantine`` at each step of the two-commit protocol.

Each file holds good records and broken lines; a batch commits its broken lines to
``faults.events__quarantine`` and then its good records to ``faults.events``. Whatever step the
worker dies at, including between the two commits, later runs leave each good record in the table
once and each bad record in the quarantine table once.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.support.tables import BATCH_ID

if TYPE_CHECKING:
    from tests.faults.conftest import FaultIngestion

pytestmark = pytest.mark.faults

FILES, ROWS, BAD, PER_COMMIT = 40, 3, 2, 10


@pytest.mark.parametrize("point", ["after-write", "before-commit", "after-quarantine-commit", "after-commit"])
def test_sigkill_between_quarantine_and_data_commits_loses_and_duplicates_nothing(
    make_faulty: Callable[..., FaultIngestion], point: str
) -> None:
    faulty = make_faulty(
        files=FILES, rows=ROWS, max_files_per_commit=PER_COMMIT, on_bad_record="quarantine", bad_per_file=BAD
    )

    died = faulty.run(fault=point)
    assert died.returncode == -signal.SIGKILL, died.describe()
    [dead_batch] = {f.batch_id for f in faulty.processing()}
    catalog = faulty.catalog
    if point in ("after-quarantine-commit", "after-commit"):
        # The dead worker's quarantine commit landed, with its batch id: rows the rerun must not repeat.
        quarantine = catalog.load_table("faults.events__quarantine")
        assert faulty.snapshots_of_batch(dead_batch, quarantine)
        assert quarantine.scan().to_arrow().num_rows == PER_COMMIT * BAD

    faulty.run_until_done()

    faulty.assert_exact()
    quarantine = catalog.load_table("faults.events__quarantine")
    raws = Counter(quarantine.scan(selected_fields=("_raw",)).to_arrow().column("_raw").to_pylist())
    expected = Counter(f'{{"bad": {n}-{b}' for n in range(FILES) for b in range(BAD))
    assert raws == expected, (
        f"missing {sorted((expected - raws).elements())[:10]}, twice {sorted((raws - expected).elements())[:10]}"
    )
    # Every quarantined row names a batch that also committed its data (none of a dead attempt's).
    data_batches = {
        s.summary.additional_properties[BATCH_ID] for s in faulty.icefloe_snapshots() if s.summary is not None
    }
    assert set(quarantine.scan().to_arrow().column("_batch_id").to_pylist()) <= data_batches
    # Files a reconciliation found committed keep their counts unknown (NULL), records_ingested too.
    reconciled = PER_COMMIT if point == "after-commit" else 0
    (ledger,) = faulty.ledger("SELECT sum(records_rejected) AS n FROM files")
    assert ledger.n == (FILES - reconciled) * BAD
