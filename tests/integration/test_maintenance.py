"""`icefloe maintain`: compaction under concurrent ingestion, expiry and orphans kept safe."""

from __future__ import annotations

import datetime as dt
import threading
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text

from icefloe import commit, ingestions, maintenance
from icefloe.errors import ConfigurationError
from icefloe.ledger import LockBounds
from icefloe.runtime import Runtime
from tests.support.cli import cli
from tests.support.inprocess import files, ingest, run
from tests.support.tables import icefloe_snapshots, ids_by_file, jsonl, load_table, rows

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def _seed(put_objects: PutObjects, bucket: str, first: int, count: int, rows_each: int = 3) -> dict[str, list[int]]:
    objects, expected = {}, {}
    for n in range(first, first + count):
        ids = [n * 100 + r for r in range(rows_each)]
        objects[f"in/f{n:04d}.jsonl"] = jsonl([{"id": i} for i in ids])
        expected[f"s3://{bucket}/in/f{n:04d}.jsonl"] = ids
    put_objects(bucket, objects)
    return expected


def _maintain(rt: Runtime, table: str, **kw: object) -> dict[str, object]:
    return maintenance.maintain(rt.db, rt.catalog, table, lease_seconds=rt.settings.lease_seconds, **kw)  # type: ignore[arg-type]


def test_compaction_while_ingesting_keeps_every_row_once(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    expected = _seed(put_objects, bucket, 0, 30)
    ingest(rt, "cmp", f"s3://{bucket}/in/", max_files_per_commit=3)
    assert run(rt, "cmp").status == "SUCCESS"
    before = maintenance.table_health(load_table(rt, "it.cmp"))
    assert before["data_files"] == before["small_files"] == 10

    expected |= _seed(put_objects, bucket, 100, 30)
    results: list[object] = []
    ingesting = threading.Thread(target=lambda: results.append(run(rt, "cmp")))
    ingesting.start()
    passes: list[dict[str, Any]] = []
    while ingesting.is_alive() or not passes:  # compaction races the ingestion's 10 commits
        passes.append(_maintain(rt, "it.cmp"))
    ingesting.join()
    passes.append(_maintain(rt, "it.cmp"))

    assert [r.status for r in results] == ["SUCCESS"]  # type: ignore[attr-defined]
    assert ids_by_file(rows(rt, "it.cmp")) == expected  # every file's rows once: nothing lost or doubled
    assert {f["status"] for f in files(rt, "cmp").values()} == {"SUCCESS"}
    after = maintenance.table_health(load_table(rt, "it.cmp"))
    assert after["data_files"] == 1, after
    summaries = icefloe_snapshots(load_table(rt, "it.cmp"))
    compactions = [s for s in summaries if s.get("icefloe.maintenance") == "compaction"]
    assert compactions and not any("icefloe.batch-id" in s for s in compactions)
    assert sum(p["compaction"]["files_rewritten"] for p in passes) >= 20

    # A replace after compaction still finds the rows by _source_file.
    changed = f"s3://{bucket}/in/f0005.jsonl"
    put_objects(bucket, {"in/f0005.jsonl": jsonl([{"id": 999}])})
    assert run(rt, "cmp").status == "SUCCESS"
    assert ids_by_file(rows(rt, "it.cmp")) == expected | {changed: [999]}


def test_retention_shorter_than_the_recovery_window_is_refused(
    rt: Runtime, icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects
) -> None:
    _seed(put_objects, bucket, 0, 2)
    ingest(rt, "ret", f"s3://{bucket}/in/")
    assert run(rt, "ret").status == "SUCCESS"
    with pytest.raises(ConfigurationError, match="shorter than the recovery window"):
        _maintain(rt, "it.ret", retention_seconds=3600)
    proc = cli(icefloe_env, "maintain", "ret", "--retention", "1h", expect=2)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "recovery window" in proc.stderr
    snapshots = len(load_table(rt, "it.ret").metadata.snapshots)
    dry = cli(icefloe_env, "maintain", "ret", "--dry-run", "--json")
    assert '"dry_run": true' in dry.stdout
    assert len(load_table(rt, "it.ret").metadata.snapshots) == snapshots


def _data_files_on_storage(rt: Runtime, table: str) -> set[str]:
    from pyarrow.fs import FileSelector, FileType
    from pyiceberg.io.pyarrow import PyArrowFileIO

    t = load_table(rt, table)
    scheme, netloc, path = PyArrowFileIO.parse_location(t.location() + "/data")
    fs = t.io.fs_by_scheme(scheme, netloc)  # type: ignore[attr-defined]
    return {
        maintenance.bare(i.path)
        for i in fs.get_file_info(FileSelector(path, recursive=True))
        if i.type == FileType.File
    }


def test_orphans_of_an_unknown_outcome_batch_are_spared_until_resolved(
    rt: Runtime, icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects
) -> None:
    expected = _seed(put_objects, bucket, 0, 4)
    ingest(rt, "orph", f"s3://{bucket}/in/", max_files_per_commit=2)
    assert run(rt, "orph").status == "SUCCESS"
    expected |= _seed(put_objects, bucket, 10, 2)
    died = cli(icefloe_env | {"ICEFLOE_FAULT_POINT": "before-commit"}, "run", "orph", expect=-9)
    assert died.returncode == -9, died.stderr
    staged = _data_files_on_storage(rt, "it.orph")
    assert len(staged) == 3  # two committed batches + the dead worker's uncommitted data file
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)  # every file is old enough by age alone

    unresolved = _maintain(rt, "it.orph", now=later)
    assert unresolved["orphans"]["orphans_removed"] == 0  # type: ignore[index]
    assert unresolved["expiry"]["snapshots_expired"] == 0  # type: ignore[index]
    dead_file = staged - {maintenance.bare(p) for p in maintenance.referenced_paths(load_table(rt, "it.orph"))}
    assert len(dead_file) == 1 and dead_file <= _data_files_on_storage(rt, "it.orph")  # spared

    # Resolve it: the lease expires, reconciliation finds the batch in no snapshot → claimable again.
    with rt.db.begin() as conn:
        conn.execute(
            text("UPDATE files SET lease_expires_at = now() - interval '1 minute' WHERE status = 'PROCESSING'")
        )
    i = ingestions.get(rt.db, "orph")
    assert commit.reconcile_expired_leases(rt.db, lambda: rt.catalog, i, LockBounds.for_lease(5)).requeued == 2

    resolved = _maintain(rt, "it.orph", now=later)
    assert resolved["orphans"]["orphans_removed"] >= 1  # type: ignore[index]
    assert not dead_file & _data_files_on_storage(rt, "it.orph")
    assert len(load_table(rt, "it.orph").metadata.snapshots) == 1  # only the current one is left
    assert run(rt, "orph").status == "SUCCESS"
    assert ids_by_file(rows(rt, "it.orph")) == expected


def test_maintain_every_is_taken_by_one_worker_and_compacts(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from icefloe import scheduler
    from icefloe.daemon import WorkerProcess

    expected = _seed(put_objects, bucket, 0, 6)
    i = ingest(rt, "every", f"s3://{bucket}/in/", max_files_per_commit=2, maintain_every_seconds=3600)
    assert ingestions.as_dict(i)["maintain_every_seconds"] == 3600
    assert run(rt, "every").status == "SUCCESS"
    assert scheduler.take_due_maintenance(rt.db) == []  # first due one interval after creation
    with rt.db.begin() as conn:
        conn.execute(text("UPDATE ingestions SET created_at = now() - interval '2 hours' WHERE id = :i"), {"i": i.id})
    with ThreadPoolExecutor(8) as pool:  # eight workers asking at once: one gets it
        taken = [ids for ids in pool.map(lambda _: scheduler.take_due_maintenance(rt.db), range(8)) if ids]
    assert taken == [[i.id]]
    with rt.db.begin() as conn:
        conn.execute(text("UPDATE ingestions SET maintenance_due_at = now() WHERE id = :i"), {"i": i.id})
    WorkerProcess(rt).maintain_due()
    assert maintenance.table_health(load_table(rt, "it.every"))["data_files"] == 1
    assert ids_by_file(rows(rt, "it.every")) == expected
    assert scheduler.take_due_maintenance(rt.db) == []  # next one due in an hour
