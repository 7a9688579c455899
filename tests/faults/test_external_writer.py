"""Another writer appends to the Iceberg table while icefloe ingests into it.

The writer lands its commits inside icefloe's commit window: it waits until an icefloe process
holds the per-table commit lock (icefloe has taken the lock, then loads the table and searches its
snapshots; a ``before-commit`` pause keeps it there for PAUSE seconds), then commits an append it
staged beforehand. icefloe's compare-and-swap then fails on the moved head; as pyiceberg's blind
retry is off, icefloe retries in its own loop after a new snapshot search. At the end icefloe's
ids are exact, every external row is there once, and the writer did land inside icefloe's windows.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from tests.faults.conftest import FaultIngestion

pytestmark = pytest.mark.faults

FILES, ROWS, PER_COMMIT = 96, 3, 8  # 12 batches
APPENDS, ROWS_PER_APPEND = 8, 4
PAUSE = 0.5  # icefloe's pause between its snapshot search and its commit, under the lock
EXTERNAL_FIRST_ID = 10_000_000
MARK = "test.external-writer"

# Who holds an advisory lock in this database now: only icefloe's commit protocol takes one here.
_LOCK_HOLDER = sa.text(
    """
    SELECT l.pid, a.xact_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    """
)


class ExternalWriter(threading.Thread):
    """Commits APPENDS appends (ids from EXTERNAL_FIRST_ID, snapshots marked MARK), each inside a
    commit window of icefloe, then lets that batch's retry through before staging the next."""

    def __init__(self, faulty: FaultIngestion, icefloe: subprocess.Popen[str], deadline: float) -> None:
        super().__init__(name="external-writer", daemon=True)
        self.faulty = faulty
        self.icefloe = icefloe
        self.deadline = deadline
        self.ids: list[int] = []
        self.in_window = 0  # appends that landed while icefloe's same transaction held the lock
        self.conflicts = 0  # the writer's own conflicts (icefloe committed first)
        self.error: BaseException | None = None

    def _until(self, predicate: Callable[[], Any], what: str) -> Any:
        """Poll until ``predicate`` holds; None once icefloe has ended; error after the deadline."""
        while True:
            value = predicate()
            if value:
                return value
            if self.icefloe.poll() is not None:
                return None
            if time.monotonic() > self.deadline:
                raise TimeoutError(f"external writer: timed out waiting for {what}")
            time.sleep(0.01)

    def run(self) -> None:
        catalog = self.faulty.new_catalog()
        db = sa.create_engine(self.faulty.database_url, poolclass=NullPool)
        name = self.faulty.table_identifier

        def holder() -> tuple[int, dt.datetime] | None:
            with db.connect() as conn:
                row = conn.execute(_LOCK_HOLDER).first()
            return None if row is None else (row.pid, row.xact_start)

        def icefloe_snapshots() -> int:
            return len(self.faulty.icefloe_snapshots(catalog.load_table(name)))

        try:
            if not self._until(lambda: catalog.table_exists(name), "icefloe to create the table"):
                return
            n = 0
            while n < APPENDS:
                ids = list(
                    range(EXTERNAL_FIRST_ID + n * ROWS_PER_APPEND, EXTERNAL_FIRST_ID + (n + 1) * ROWS_PER_APPEND)
                )
                table = catalog.load_table(name)
                tx = table.transaction()
                tx.append(external_rows(table, ids, n), snapshot_properties={MARK: str(n)})
                window = self._until(holder, "icefloe's next commit window")
                if window is None:
                    return
                time.sleep(0.1)  # icefloe has loaded the table and searched it by now (it pauses PAUSE s)
                before = icefloe_snapshots()
                try:
                    tx.commit_transaction()
                except CommitFailedException:
                    self.conflicts += 1
                    continue
                self.ids.extend(ids)
                n += 1
                if holder() == window:
                    self.in_window += 1
                # Let icefloe's retry of that batch through before staging the next append.
                if self._until(lambda b=before: icefloe_snapshots() > b, "icefloe's retried commit") is None:
                    return
        except BaseException as exc:
            self.error = exc
        finally:
            catalog.engine.dispose()
            db.dispose()


def external_rows(table: Table, ids: list[int], n: int) -> pa.Table:
    """Rows in the table's Arrow schema; ``_source_file`` marks them as the external writer's."""
    schema = table.schema().as_arrow()
    values = {
        "id": ids,
        "payload": [f"external-{i}" for i in ids],
        "_source_file": [f"external://writer/{n}"] * len(ids),
        "_ingested_at": [dt.datetime.now(dt.UTC)] * len(ids),
    }
    return pa.Table.from_pydict({f.name: values.get(f.name, [None] * len(ids)) for f in schema}, schema=schema)


def test_concurrent_external_appends_do_not_break_exactly_once(
    make_faulty: Callable[..., FaultIngestion],
) -> None:
    faulty = make_faulty(files=FILES, rows=ROWS, max_files_per_commit=PER_COMMIT)

    proc = faulty.start(fault=f"before-commit:sleep={PAUSE}", verbose=True)
    writer = ExternalWriter(faulty, proc, deadline=time.monotonic() + 150)
    writer.start()
    result = faulty.finish(proc)
    writer.join(timeout=max(1.0, writer.deadline - time.monotonic()))

    assert not writer.is_alive(), "the external writer did not finish"
    assert writer.error is None, f"external writer failed: {writer.error!r}"
    assert result.returncode == 0, result.describe()
    assert result.summary["files_succeeded"] == FILES
    # The scenario happened: external commits landed inside icefloe's commit windows.
    assert writer.in_window >= APPENDS // 2, (
        f"only {writer.in_window} of {len(writer.ids) // ROWS_PER_APPEND} external appends landed "
        f"inside an icefloe commit window ({writer.conflicts} writer conflicts)"
    )
    # ... and icefloe's commits there failed their compare-and-swap and were retried by icefloe
    # (logged at INFO by icefloe.commit: "commit conflict on TABLE (attempt N)"). Usually one per
    # window hit; fewer if icefloe, slowed down, loaded the table only after the external commit.
    icefloe_conflicts = result.stderr.count("commit conflict")
    assert icefloe_conflicts >= max(1, writer.in_window // 2), (
        f"icefloe logged {icefloe_conflicts} commit conflicts for {writer.in_window} windows hit"
    )

    table = faulty.assert_exact()  # icefloe's ids exact, one snapshot per batch, each with its batch id
    assert len(faulty.icefloe_snapshots(table)) == FILES // PER_COMMIT
    data = table.scan(selected_fields=("id", "_source_file")).to_arrow()
    sources = data["_source_file"].to_pylist()
    external = Counter(
        i for i, s in zip(data["id"].to_pylist(), sources, strict=True) if s and s.startswith("external://")
    )
    assert external == Counter(writer.ids), "external rows lost or duplicated"
    assert data.num_rows == FILES * ROWS + len(writer.ids)
    marked = [s for s in table.metadata.snapshots if s.summary and MARK in s.summary.additional_properties]
    assert len(marked) == len(writer.ids) // ROWS_PER_APPEND
