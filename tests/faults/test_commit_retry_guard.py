"""Guard: pyiceberg's blind commit retry must stay off on the tables icefloe writes.

pyiceberg 0.12 retries a ``CommitFailedException`` by rebuilding the snapshot on the new table
head (``Transaction.commit_transaction`` → ``_rebuild_snapshot_updates``), checking only its own
snapshot id: a batch that landed under another snapshot id would be committed twice. icefloe turns
it off with the table property ``commit.retry.num-retries=0`` and retries in its own loop after the
snapshot search (DESIGN.md, the ledger protocol, step 3). If a pyiceberg upgrade ignores that
property, a commit from a stale table goes through here and this test fails.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

if TYPE_CHECKING:
    from tests.faults.conftest import FaultIngestion

pytestmark = pytest.mark.faults

RETRIES = "commit.retry.num-retries"


def _rows(table: Table, first_id: int, count: int) -> pa.Table:
    """Rows in the table's own Arrow schema (the JSONL columns plus icefloe's metadata columns)."""
    now = dt.datetime.now(dt.UTC)
    values = {
        "id": list(range(first_id, first_id + count)),
        "payload": [f"guard-{i}" for i in range(first_id, first_id + count)],
        "_source_file": ["guard://stale-commit"] * count,
        "_ingested_at": [now] * count,
    }
    schema = table.schema().as_arrow()
    return pa.Table.from_pydict({f.name: values[f.name] for f in schema}, schema=schema)


def _stale_append_after_a_concurrent_one(table_loader: Callable[[], Table]) -> tuple[Table, Table]:
    """Load the table twice, append through the second copy, then append through a transaction
    on the first (now stale) copy; returns (t1, t2). The stale commit conflicts on the table head."""
    t1, t2 = table_loader(), table_loader()
    t2.append(_rows(t2, 1_000_000, 3))
    tx = t1.transaction()
    tx.append(_rows(t1, 2_000_000, 3))
    tx.commit_transaction()
    return t1, t2


def test_pyiceberg_does_not_retry_icefloe_commits_blindly(make_faulty: Callable[..., FaultIngestion]) -> None:
    faulty = make_faulty(files=5, rows=2, max_files_per_commit=5)
    first = faulty.run()
    assert first.returncode == 0, first.describe()
    table = faulty.table()
    assert table.properties.get(RETRIES) == "0", f"icefloe must create its tables with {RETRIES}=0"

    with pytest.raises(CommitFailedException):
        _stale_append_after_a_concurrent_one(faulty.table)

    ids = faulty.table().scan(selected_fields=("id",)).to_arrow()["id"].to_pylist()
    assert not [i for i in ids if i >= 2_000_000], "the stale append landed: pyiceberg retried it blindly"
    assert sorted(i for i in ids if 1_000_000 <= i < 2_000_000) == [1_000_000, 1_000_001, 1_000_002]

    # Control: the same stale append on a copy of the table without the property does go through
    # (pyiceberg rebuilt and retried it), so the conflict above really reached the retry decision.
    # If this part fails after an upgrade, pyiceberg no longer retries blindly by default: revisit
    # the guard rather than deleting it.
    catalog = faulty.catalog
    control = catalog.create_table("faults.control", schema=table.schema())
    assert control.properties.get(RETRIES) is None
    _stale_append_after_a_concurrent_one(lambda: catalog.load_table("faults.control"))
    ids = catalog.load_table("faults.control").scan(selected_fields=("id",)).to_arrow()["id"].to_pylist()
    assert sorted(ids) == [1_000_000, 1_000_001, 1_000_002, 2_000_000, 2_000_001, 2_000_002]
