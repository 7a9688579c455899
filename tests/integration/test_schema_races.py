"""Schema changes racing each other and data commits on one table: each lands once.

The batches are staged against the same table head before either commits, as two workers do when
they read at the same time; the commits then run one after the other (the per-table lock
serialises icefloe's own commits), or with another writer's commit slipped in between.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from icefloe import commit, engines, ingestions, ledger, metrics, runs, schema_changes, tables, worker
from icefloe.engines import Committed, StagedBatch
from icefloe.errors import SchemaRaceError
from icefloe.ledger import Batch, LockBounds
from icefloe.models import Ingestion
from icefloe.runtime import Runtime
from tests.support.inprocess import claim, commit_staged, files, ingest, run
from tests.support.tables import ids_by_file, jsonl, load_table, rows

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from tests.support.services import PutObjects


def stage_two(rt: Runtime, name: str) -> tuple[Ingestion, int, list[tuple[Batch, StagedBatch]]]:
    """Discover, then claim and stage two one-file batches before either commits."""
    ingestion = ingestions.get(rt.db, name)
    the_run = runs.start(rt.db, ingestion.id, trigger="test", worker_id="test")
    worker._discover(rt, ingestion, the_run, None)
    engine = engines.load_engine("arrow", rt, ingestion)
    batches = [claim(rt, ingestion, the_run.id) for _ in range(2)]
    return ingestion, the_run.id, [(b, engine.stage(b, threading.Event())) for b in batches]


def test_the_same_new_column_in_two_concurrent_batches_evolves_the_table_once(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"s/0.jsonl": jsonl([{"id": 0}])})
    ingest(rt, "same", f"s3://{bucket}/s/")
    run(rt, "same")
    schemas_before = len(load_table(rt, "it.same").metadata.schemas)
    put_objects(
        bucket,
        {"s/1.jsonl": jsonl([{"id": 1, "email": "a@example.com"}]), "s/2.jsonl": jsonl([{"id": 2, "email": "b@x"}])},
    )
    ingestion, run_id, staged = stage_two(rt, "same")
    engine = engines.load_engine("arrow", rt, ingestion)
    for batch, batch_staged in staged:
        assert commit_staged(rt, ingestion, run_id, batch, batch_staged, engine).committed

    table = load_table(rt, "it.same")
    assert len(table.metadata.schemas) == schemas_before + 1  # one evolution, not two
    assert table.schema().column_names.count("email") == 1
    got = {r["id"]: r["email"] for r in rows(rt, "it.same").to_pylist()}
    assert got == {0: None, 1: "a@example.com", 2: "b@x"}
    history = schema_changes.history(rt.db, ingestion)
    assert [v.status for v in history] == ["CREATED", "APPLIED"]
    assert history[1].description == "adds email (string)"


def test_different_new_columns_in_concurrent_batches_both_land_the_later_read_again(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"d/0.jsonl": jsonl([{"id": 0}])})
    ingest(rt, "diff", f"s3://{bucket}/d/")
    run(rt, "diff")
    put_objects(bucket, {"d/1.jsonl": jsonl([{"id": 1, "x": "one"}]), "d/2.jsonl": jsonl([{"id": 2, "y": 2}])})
    ingestion, run_id, staged = stage_two(rt, "diff")
    engine = engines.load_engine("arrow", rt, ingestion)
    (first, first_staged), (second, second_staged) = staged
    assert commit_staged(rt, ingestion, run_id, first, first_staged, engine).committed
    # The second batch's data files give its new column the field id the first one's now has.
    with pytest.raises(SchemaRaceError):
        commit_staged(rt, ingestion, run_id, second, second_staged, engine)
    with rt.db.begin() as conn:  # what the worker does with a lost batch: give it back unpenalised
        ledger.release(conn, second.files, second.batch_id)
    assert run(rt, "diff").status == "SUCCESS"

    got = {r["id"]: (r["x"], r["y"]) for r in rows(rt, "it.diff").to_pylist()}
    assert got == {0: (None, None), 1: ("one", None), 2: (None, 2)}
    assert {k: v["retry_count"] for k, v in files(rt, "diff").items()} == {
        f"s3://{bucket}/d/{n}.jsonl": 0 for n in range(3)
    }


class _SlippedIn:
    """An engine whose first commit is preceded by another writer's commit landing on the table
    after the commit protocol loaded and searched its head."""

    def __init__(self, inner: engines.Engine, before: Callable[[], object]) -> None:
        self.inner = inner
        self.before = before
        self.calls = 0

    def stage(self, batch: Batch, cancelled: threading.Event) -> StagedBatch:
        return self.inner.stage(batch, cancelled)

    def commit(self, table: Table, staged: StagedBatch, properties: dict[str, str], replaced: list[str]) -> Committed:
        self.calls += 1
        if self.calls == 1:
            self.before()
        return self.inner.commit(table, staged, properties, replaced)


def test_an_approved_change_racing_a_data_commit_both_land(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {"r/0.jsonl": jsonl([{"id": 0}])})
    ingestion = ingest(rt, "race", f"s3://{bucket}/r/", schema_evolution="approve")
    run(rt, "race")
    put_objects(bucket, {"r/1.jsonl": jsonl([{"id": 1, "email": "a@x"}])})
    run(rt, "race")
    (change,) = schema_changes.pending(rt.db, ingestion)
    put_objects(bucket, {"r/2.jsonl": jsonl([{"id": 2}])})

    the_run = runs.start(rt.db, ingestion.id, trigger="test", worker_id="test")
    worker._discover(rt, ingestion, the_run, None)
    batch = claim(rt, ingestion, the_run.id)
    assert [f.file_path for f in batch.files] == [f"s3://{bucket}/r/2.jsonl"]
    racing = _SlippedIn(
        engines.load_engine("arrow", rt, ingestion),
        lambda: schema_changes.approve(rt.db, rt.catalog, ingestion, change.id, actor="cli"),
    )
    staged = racing.stage(batch, threading.Event())
    # A schema change and an append commute in Iceberg (the append asserts only the branch head):
    # the data lands on top of the approved schema, whose approval landed too.
    assert commit_staged(rt, ingestion, the_run.id, batch, staged, racing).committed

    assert run(rt, "race").status == "SUCCESS"  # the approved file, now claimable
    assert ids_by_file(rows(rt, "it.race")) == {f"s3://{bucket}/r/{n}.jsonl": [n] for n in range(3)}
    assert "email" in load_table(rt, "it.race").schema().column_names


def test_a_staged_schema_change_racing_another_writers_schema_change_is_retried_and_lands(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"w/0.jsonl": jsonl([{"id": 0, "n": 1.5}])})
    ingest(rt, "conflict", f"s3://{bucket}/w/")
    run(rt, "conflict")
    put_objects(bucket, {"w/1.jsonl": jsonl([{"id": 1, "n": 2.5, "email": "a@x"}])})
    ingestion = ingestions.get(rt.db, "conflict")
    the_run = runs.start(rt.db, ingestion.id, trigger="test", worker_id="test")
    worker._discover(rt, ingestion, the_run, None)
    batch = claim(rt, ingestion, the_run.id)

    def other_writer_documents_a_column() -> None:
        table = load_table(rt, "it.conflict")
        with table.update_schema() as update:
            update.update_column("n", doc="a measurement")  # a new schema, no new column

    racing = _SlippedIn(engines.load_engine("arrow", rt, ingestion), other_writer_documents_a_column)
    staged = racing.stage(batch, threading.Event())
    conflicts = metrics.REGISTRY.get_sample_value("icefloe_commit_conflicts_total", {"ingestion": "conflict"}) or 0.0
    assert commit_staged(rt, ingestion, the_run.id, batch, staged, racing).committed
    assert racing.calls == 2  # the schema update's compare-and-swap failed once, then landed
    assert (
        metrics.REGISTRY.get_sample_value("icefloe_commit_conflicts_total", {"ingestion": "conflict"}) == conflicts + 1
    )

    table = load_table(rt, "it.conflict")
    assert table.schema().find_field("n").doc == "a measurement"
    assert {r["id"]: r["email"] for r in rows(rt, "it.conflict").to_pylist()} == {0: None, 1: "a@x"}


def test_a_worker_dead_after_its_schema_changing_commit_leaves_the_change_in_the_history(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"k/0.jsonl": jsonl([{"id": 0}])})
    ingest(rt, "dead", f"s3://{bucket}/k/")
    run(rt, "dead")
    put_objects(bucket, {"k/1.jsonl": jsonl([{"id": 1, "email": "a@x"}])})
    ingestion, run_id, [(batch, staged), *_] = stage_one(rt, "dead")
    engine = engines.load_engine("arrow", rt, ingestion)
    # The Iceberg commit lands, then the worker dies before its ledger transaction commits.
    props = tables.snapshot_properties(batch.batch_id, run_id, len(batch.files))
    engine.commit(load_table(rt, "it.dead"), staged, props, [])
    with rt.db.begin() as conn:
        conn.execute(
            sa.text("UPDATE files SET lease_expires_at = now() - interval '1 second' WHERE status = 'PROCESSING'")
        )

    reconciled = commit.reconcile_expired_leases(rt.db, lambda: rt.catalog, ingestion, LockBounds.for_lease(60))
    assert (reconciled.committed, reconciled.requeued) == (1, 0)
    history = schema_changes.history(rt.db, ingestion)
    assert [(v.status, v.description, v.file) for v in history] == [
        ("CREATED", "table created", f"s3://{bucket}/k/0.jsonl"),
        ("APPLIED", "adds email (string)", f"s3://{bucket}/k/1.jsonl"),
    ]
    assert history[-1].schema_id == load_table(rt, "it.dead").schema().schema_id
    assert {r["id"]: r["email"] for r in rows(rt, "it.dead").to_pylist()} == {0: None, 1: "a@x"}


def stage_one(rt: Runtime, name: str) -> tuple[Ingestion, int, list[tuple[Batch, StagedBatch]]]:
    ingestion = ingestions.get(rt.db, name)
    the_run = runs.start(rt.db, ingestion.id, trigger="test", worker_id="test")
    worker._discover(rt, ingestion, the_run, None)
    batch = claim(rt, ingestion, the_run.id)
    return ingestion, the_run.id, [(batch, engines.load_engine("arrow", rt, ingestion).stage(batch, threading.Event()))]
