"""Several ``icefloe run`` processes on one ingestion at once: SKIP LOCKED claims, fencing and the
per-table commit lock keep every file's rows in the table exactly once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest

from icefloe import tables
from icefloe.settings import Settings

if TYPE_CHECKING:
    from tests.faults.conftest import FaultIngestion

pytestmark = pytest.mark.faults

FILES, ROWS, PER_COMMIT, WORKERS = 300, 4, 20, 3


def test_concurrent_runs_commit_each_file_once(make_faulty: Callable[..., FaultIngestion]) -> None:
    faulty = make_faulty(files=FILES, rows=ROWS, max_files_per_commit=PER_COMMIT)

    # Processes start seconds apart on a busy machine; so that all of them really race, the test
    # holds the commit lock until each has claimed (and staged) a batch of its own, then lets go.
    with faulty.commit_lock_held():
        procs = [faulty.start() for _ in range(WORKERS)]
        faulty.wait_for(
            lambda: (
                any(p.poll() is not None for p in procs) or len({f.lease_owner for f in faulty.processing()}) == WORKERS
            ),
            timeout=90,
            what=f"{WORKERS} runs each holding a batch",
        )
    results = [faulty.finish(p) for p in procs]

    for r in results:
        assert r.returncode == 0, r.describe()
    summaries = [r.summary for r in results]
    # Each file was committed by exactly one of the runs, and every run committed some.
    assert sum(s["files_succeeded"] for s in summaries) == FILES, summaries
    assert sum(s["records_ingested"] for s in summaries) == FILES * ROWS, summaries
    assert all(s["files_succeeded"] > 0 for s in summaries), summaries
    table = faulty.assert_exact()
    snapshots = faulty.icefloe_snapshots(table)
    assert len(snapshots) == FILES // PER_COMMIT
    # Every snapshot names the run that committed it: each run's snapshots are its batches.
    by_run = {str(s["run_id"]): s["snapshots_committed"] for s in summaries}
    committed_by = [s.summary.additional_properties["icefloe.run-id"] for s in snapshots]
    assert {run: committed_by.count(run) for run in by_run} == by_run


ROUNDS, STARTING_TOGETHER = 3, 6


def _together(action: Callable[[], None]) -> list[BaseException]:
    """Run ``action`` in STARTING_TOGETHER threads released at one instant; the errors raised."""
    barrier = threading.Barrier(STARTING_TOGETHER)
    errors: list[BaseException] = []

    def one() -> None:
        barrier.wait(timeout=30)
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(STARTING_TOGETHER)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_workers_starting_together_on_a_fresh_database_all_get_the_catalog(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    """Workers started at once against a new ledger database all load the default catalog.

    The default pyiceberg SQL catalog creates its own tables on first use, unless they exist
    (check, then CREATE): workers loading it at the same instant race on that. Each round is a
    fresh database and STARTING_TOGETHER threads released by one barrier, each doing what an
    ``icefloe run`` does when it first needs the catalog (``icefloe.tables.load``).
    """
    for _ in range(ROUNDS):
        url = make_database()

        def load(url: str = url) -> None:
            tables.load(Settings(home=tmp_path / "home"), url).engine.dispose()  # type: ignore[attr-defined]

        errors = _together(load)
        assert not errors, f"{len(errors)} of {STARTING_TOGETHER} workers could not load the catalog: {errors[0]!r}"


def test_workers_creating_the_table_together_all_get_it(make_database: Callable[[], str], tmp_path: Path) -> None:
    """Workers whose first batches create the table at the same instant all get the table.

    ``icefloe.tables.create_table`` creates the namespace and the table unless they exist, "a
    concurrent creator wins harmlessly": every worker must end up with the table, none with an
    error (which would fail its run). Each round: a fresh database (its catalog tables made
    first), STARTING_TOGETHER threads with a catalog each, one barrier.
    """
    schema = pa.schema([pa.field("id", pa.int64()), pa.field("payload", pa.string())])
    settings = Settings(home=tmp_path / "home")
    for _ in range(ROUNDS):
        url = make_database()
        tables.load(settings, url).engine.dispose()  # type: ignore[attr-defined]

        def create(url: str = url) -> None:
            catalog = tables.load(settings, url)
            try:
                assert tables.create_table(catalog, "faults.together", schema).name() == ("faults", "together")
            finally:
                catalog.engine.dispose()  # type: ignore[attr-defined]

        errors = _together(create)
        assert not errors, f"{len(errors)} of {STARTING_TOGETHER} workers could not create the table: {errors[0]!r}"
