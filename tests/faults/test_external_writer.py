"""Another writer appends to the Iceberg table while icefloe ingests into it.

The writer lands its commits inside icefloe's commit window: at icefloe's ``before-commit`` point
(icefloe holds the per-table commit lock, has loaded the table and searched its snapshots), the
writer commits an append of its own, on every other batch. icefloe's compare-and-swap then fails on
the moved head; as pyiceberg's blind retry is off, icefloe retries in its own loop after a new
snapshot search, and counts the conflict (``icefloe_commit_conflicts_total``). At the end icefloe's
ids are exact, every external row is there once, and every external append cost icefloe one retry.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from pyiceberg.table import Table

from icefloe import faults, ingestions, metrics, worker
from icefloe.runtime import Runtime
from icefloe.settings import Settings
from tests.support.services import ENV_PREFIXES
from tests.support.tables import EXTERNAL_WRITER

if TYPE_CHECKING:
    from tests.faults.conftest import FaultIngestion

pytestmark = pytest.mark.faults

FILES, ROWS, PER_COMMIT = 96, 3, 8  # 12 batches
APPENDS, ROWS_PER_APPEND = 6, 4  # one inside the commit window of every other batch
EXTERNAL_FIRST_ID = 10_000_000


class ExternalWriter:
    """At icefloe's ``before-commit`` point (a stand-in for :func:`icefloe.faults.point`), commits
    an append (ids from EXTERNAL_FIRST_ID, snapshots marked EXTERNAL_WRITER) on every other call,
    APPENDS in all: each lands between icefloe's snapshot search and its compare-and-swap."""

    def __init__(self, faulty: FaultIngestion) -> None:
        self.faulty = faulty
        self.catalog = faulty.new_catalog()
        self.ids: list[int] = []
        self.calls = 0
        self.appends = 0
        self.lock = threading.Lock()  # icefloe's read threads never reach this point, but be safe

    def point(self, name: str) -> None:
        if name != "before-commit":
            return
        with self.lock:
            self.calls += 1
            if self.appends >= APPENDS or self.calls % 2 == 0:
                return  # this attempt goes through: icefloe commits the batch
            ids = list(
                range(
                    EXTERNAL_FIRST_ID + self.appends * ROWS_PER_APPEND,
                    EXTERNAL_FIRST_ID + (self.appends + 1) * ROWS_PER_APPEND,
                )
            )
            table = self.catalog.load_table(self.faulty.table_identifier)
            table.append(
                external_rows(table, ids, self.appends), snapshot_properties={EXTERNAL_WRITER: str(self.appends)}
            )
            self.ids.extend(ids)
            self.appends += 1


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


@pytest.fixture
def runtime_of(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[FaultIngestion], Runtime]]:
    """``runtime_of(faulty)``: icefloe in this process on the fault harness's database and S3 (the
    AWS SDK reads this process's environment, made to match for the test)."""
    made: list[Runtime] = []

    def make(faulty: FaultIngestion) -> Runtime:
        for key, value in faulty.env.items():
            if key.startswith(ENV_PREFIXES):
                monkeypatch.setenv(key, value)
        made.append(Runtime.open(Settings.from_env(faulty.env)))
        return made[-1]

    yield make
    for rt in made:
        rt.close()


def conflicts(ingestion: str) -> float:
    return metrics.REGISTRY.get_sample_value("icefloe_commit_conflicts_total", {"ingestion": ingestion}) or 0.0


def test_concurrent_external_appends_do_not_break_exactly_once(
    make_faulty: Callable[..., FaultIngestion],
    runtime_of: Callable[[FaultIngestion], Runtime],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faulty = make_faulty(files=FILES, rows=ROWS, max_files_per_commit=PER_COMMIT)
    rt = runtime_of(faulty)
    writer = ExternalWriter(faulty)
    monkeypatch.setattr(faults, "point", writer.point)
    before = conflicts("events")
    try:
        run = worker.run_ingestion(rt, ingestions.get(rt.db, "events"), trigger="test")
    finally:
        writer.catalog.engine.dispose()

    assert (run.status, run.files_succeeded) == ("SUCCESS", FILES), run
    assert writer.appends == APPENDS, f"only {writer.appends} external appends in {writer.calls} commit windows"
    # Each external append moved the head inside a window: icefloe's compare-and-swap failed, it
    # counted the conflict and retried after a new search.
    assert conflicts("events") - before == APPENDS

    table = faulty.assert_exact()  # icefloe's ids exact, one snapshot per batch, each with its batch id
    assert len(faulty.icefloe_snapshots(table)) == FILES // PER_COMMIT
    data = table.scan(selected_fields=("id", "_source_file")).to_arrow()
    sources = data["_source_file"].to_pylist()
    external = Counter(
        i for i, s in zip(data["id"].to_pylist(), sources, strict=True) if s and s.startswith("external://")
    )
    assert external == Counter(writer.ids), "external rows lost or duplicated"
    assert data.num_rows == FILES * ROWS + len(writer.ids)
    marked = [s for s in table.metadata.snapshots if s.summary and EXTERNAL_WRITER in s.summary.additional_properties]
    assert len(marked) == APPENDS
