"""The engine contract, run over every engine (arrow always; spark under its marker, against a real
Spark Connect server) on real S3 and PostgreSQL: many files in few batches, change detection, an
object changed while its batch is read, bad files isolated, exactly once after SIGKILL, commit
conflicts searched before retrying, and one catalog shared by both engines."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from sqlalchemy import text

from icefloe import ingestions
from icefloe.runtime import Runtime
from tests.support.engines import SparkServer, define
from tests.support.inprocess import files as statuses
from tests.support.inprocess import run
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def rows(rt: Runtime, table: str) -> pa.Table:
    return rt.catalog.load_table(table).scan().to_arrow()


def ids(rt: Runtime, table: str) -> list[int]:
    return sorted(rows(rt, table).column("id").to_pylist())


def leased(rt: Runtime, name: str) -> bool:
    """Whether a PROCESSING file of the ingestion still holds a live lease (database clock)."""
    i = ingestions.get(rt.db, name)
    with rt.db.connect() as conn:
        row = conn.execute(
            text("SELECT 1 FROM files WHERE ingestion_id = :i AND status = 'PROCESSING' AND lease_expires_at >= now()"),
            {"i": i.id},
        ).first()
    return row is not None


def icefloe_summaries(rt: Runtime, table: str) -> list[dict[str, str]]:
    t = rt.catalog.load_table(table)
    return [
        dict(s.summary.additional_properties)
        for s in t.metadata.snapshots
        if s.summary is not None and "icefloe.batch-id" in s.summary.additional_properties
    ]


def test_many_files_in_few_batches(engine: str, ert: Runtime, bucket: str, put_objects: PutObjects) -> None:
    n_files, per_file = 300, 3
    put_objects(
        bucket,
        {
            f"events/part-{i:04d}.jsonl": jsonl(
                [{"id": i * per_file + j, "name": f"n{j}", "score": j * 0.5} for j in range(per_file)]
            )
            for i in range(n_files)
        },
    )
    define(ert, engine, "many", f"s3://{bucket}/events/", "contract.many", max_files_per_commit=120)

    result = run(ert, "many")

    assert (result.status, result.files_succeeded, result.files_failed) == ("SUCCESS", n_files, 0)
    assert ids(ert, "contract.many") == list(range(n_files * per_file))
    summaries = icefloe_summaries(ert, "contract.many")
    assert [int(s["icefloe.file-count"]) for s in summaries] == [120, 120, 60]  # one commit per batch
    assert result.snapshots_committed == 3
    ledger_rows = statuses(ert, "many")
    assert {r["status"] for r in ledger_rows.values()} == {"SUCCESS"}
    by_batch = {s["icefloe.batch-id"] for s in summaries}
    table = rows(ert, "contract.many")
    assert set(table.column("_source_file").to_pylist()) == set(ledger_rows)
    assert str(table.schema.field("_ingested_at").type) == "timestamp[us, tz=UTC]"
    snapshot_ids = {r["snapshot_id"] for r in ledger_rows.values()}
    t = ert.catalog.load_table("contract.many")
    assert {
        str(t.snapshot_by_id(s).summary.additional_properties["icefloe.batch-id"]) for s in snapshot_ids
    } == by_batch

    again = run(ert, "many")  # nothing new: no commit
    assert (again.files_succeeded, again.snapshots_committed) == (0, 0)


def test_changed_file_replaces_its_rows_atomically(
    engine: str, ert: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {f"in/f{i}.jsonl": jsonl([{"id": i * 10 + j} for j in range(3)]) for i in range(4)})
    define(ert, engine, "chg", f"s3://{bucket}/in/", "contract.chg")
    assert run(ert, "chg").status == "SUCCESS"
    put_objects(bucket, {"in/f2.jsonl": jsonl([{"id": 900}, {"id": 901}])})  # a new version
    put_objects(bucket, {"in/f9.jsonl": jsonl([{"id": 990}])})  # and a new file

    second = run(ert, "chg")

    assert (second.status, second.files_changed, second.files_succeeded) == ("SUCCESS", 1, 2)
    assert ids(ert, "contract.chg") == [0, 1, 2, 10, 11, 12, 30, 31, 32, 900, 901, 990]
    t = ert.catalog.load_table("contract.chg")
    last = t.current_snapshot()
    assert last is not None and last.summary is not None
    # delete of the old version and append of the new one: one transaction, both with the batch id
    parent = t.snapshot_by_id(last.parent_snapshot_id)
    assert parent is not None and parent.summary is not None
    assert (
        last.summary.additional_properties["icefloe.batch-id"]
        == parent.summary.additional_properties["icefloe.batch-id"]
    )
    assert second.snapshots_committed == 2


def test_object_changed_while_its_batch_is_read_is_ingested_once_at_its_new_version(
    engine: str, ert: Runtime, bucket: str, put_objects: PutObjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed at version 1, overwritten after the claim and before the read: the run must not ingest
    version 2's rows under version 1's ETag (under ``append`` that would put the object in twice);
    the file goes back to discovery and the next run ingests version 2, once."""
    put_objects(bucket, {f"in/f{i}.jsonl": jsonl([{"id": i}]) for i in range(4)})
    define(ert, engine, "mid", f"s3://{bucket}/in/", "contract.mid", on_change="append")
    monkeypatch.setenv("ICEFLOE_FAULT_POINT", "after-claim:sleep=2")  # time to overwrite after the claim

    def overwrite_once_claimed() -> None:
        wait_for(lambda: bool(claimed(ert, "mid")), timeout=120, what="the claim")
        put_objects(bucket, {"in/f2.jsonl": jsonl([{"id": 20}, {"id": 21}])})

    writer = threading.Thread(target=overwrite_once_claimed)
    writer.start()
    first = run(ert, "mid")
    writer.join()
    monkeypatch.delenv("ICEFLOE_FAULT_POINT")

    assert first.status == "SUCCESS" and first.files_succeeded == 3
    assert ids(ert, "contract.mid") == [0, 1, 3]  # nothing of f2: neither version
    second = run(ert, "mid")
    assert (second.status, second.files_changed, second.files_succeeded) == ("SUCCESS", 1, 1)
    assert ids(ert, "contract.mid") == [0, 1, 3, 20, 21]
    assert {r["status"] for r in statuses(ert, "mid").values()} == {"SUCCESS"}


def claimed(rt: Runtime, name: str) -> list[str]:
    return [p for p, r in statuses(rt, name).items() if r["status"] == "PROCESSING"]


def test_bad_files_are_isolated(engine: str, ert: Runtime, bucket: str, put_objects: PutObjects) -> None:
    good = {f"in/good-{i}.jsonl": jsonl([{"id": i * 10 + j, "v": "x"} for j in range(2)]) for i in range(6)}
    bad = {
        "in/bad-json.jsonl": b'{"id": 1000, "v": "x"}\n{"id": 1001, "v": \n',
        "in/bad-gzip.jsonl.gz": gzip.compress(jsonl([{"id": 2000}]))[:-12] + b"garbage!",
    }
    put_objects(bucket, {**good, **bad})
    define(ert, engine, "bad", f"s3://{bucket}/in/", "contract.bad", max_retries=0)

    result = run(ert, "bad")

    assert (result.status, result.files_succeeded, result.files_failed) == ("PARTIAL", 6, 2)
    assert ids(ert, "contract.bad") == sorted(i * 10 + j for i in range(6) for j in range(2))
    ledger_rows = statuses(ert, "bad")
    for key in bad:
        row = ledger_rows[f"s3://{bucket}/{key}"]
        assert row["status"] == "FAILED"
        assert "\n" not in row["error_message"] and len(row["error_message"]) < 600
        assert row["error_message"].startswith(f"s3://{bucket}/{key}: ")
    assert ledger_rows[f"s3://{bucket}/in/bad-json.jsonl"]["error_type"] == "MalformedJSON"
    assert len(icefloe_summaries(ert, "contract.bad")) == 1  # the good files: one commit


@pytest.mark.parametrize("engine", [pytest.param("spark", marks=pytest.mark.spark)], indirect=True)
def test_one_catalog_shared_by_both_engines(engine: str, ert: Runtime, bucket: str, put_objects: PutObjects) -> None:
    """One catalog: an ingestion switches engines and keeps its table and history."""
    put_objects(bucket, {f"in/a{i}.jsonl": jsonl([{"id": i, "ts": "2025-01-02T03:04:05Z"}]) for i in range(3)})
    define(ert, "arrow", "both", f"s3://{bucket}/in/", "contract.both", schema={"id": "long", "ts": "timestamptz"})
    assert run(ert, "both").status == "SUCCESS"  # pyiceberg creates and writes the table

    ingestions.update(ert.db, "both", {"engine": "spark"})
    put_objects(bucket, {f"in/b{i}.jsonl": jsonl([{"id": 100 + i, "ts": "2025-06-01T00:00:00Z"}]) for i in range(3)})
    assert run(ert, "both").status == "SUCCESS"  # Spark appends to pyiceberg's table

    table = rows(ert, "contract.both")  # pyiceberg reads Spark's snapshot
    assert sorted(table.column("id").to_pylist()) == [0, 1, 2, 100, 101, 102]
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert len(icefloe_summaries(ert, "contract.both")) == 2  # one batch per engine, each with its batch id

    from icefloe.engines.spark.session import session, target_for

    spark = session(target_for(ert.catalog, ert.settings, None))
    counted = spark.sql("SELECT count(*) AS n, count(DISTINCT _source_file) AS f FROM icefloe.contract.both").collect()[
        0
    ]
    assert (counted["n"], counted["f"]) == (6, 6)  # Spark reads both engines' rows

    ingestions.update(ert.db, "both", {"engine": "arrow"})
    put_objects(bucket, {"in/c0.jsonl": jsonl([{"id": 200, "ts": "2025-07-01T00:00:00Z"}])})
    assert run(ert, "both").status == "SUCCESS"  # pyiceberg appends to a table Spark wrote last
    assert spark.sql("SELECT count(*) AS n FROM icefloe.contract.both").collect()[0]["n"] == 7


@pytest.mark.parametrize("point", ["after-write", "after-commit"])
def test_exactly_once_after_sigkill(
    point: str,
    engine: str,
    ert: Runtime,
    engine_env: dict[str, str],
    bucket: str,
    put_objects: PutObjects,
    tmp_path: Path,
) -> None:
    seeded = list(range(60))
    put_objects(bucket, {f"in/f{i:02d}.jsonl": jsonl([{"id": i * 3 + j} for j in range(3)]) for i in range(20)})
    env = {**engine_env, "ICEFLOE_LEASE_SECONDS": "3"}
    icefloe = str(Path(sys.executable).parent / "icefloe")
    created = subprocess.run(
        [
            *(icefloe, "ingestion", "create", "kill", "--source", f"s3://{bucket}/in/", "--format", "jsonl"),
            *("--table", "contract.kill", "--max-files-per-commit", "8", "--engine", engine, "--json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["engine"] == engine

    killed = subprocess.run(
        [icefloe, "run", "kill", "--json"],
        env={**env, "ICEFLOE_FAULT_POINT": point},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]

    wait_for(lambda: not leased(ert, "kill"), timeout=30, what="the dead worker's lease to expire")
    final = subprocess.run([icefloe, "run", "kill", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]

    assert ids(ert, "contract.kill") == sorted(i * 3 + j for i in range(20) for j in range(3)) == seeded
    assert {r["status"] for r in statuses(ert, "kill").values()} == {"SUCCESS"}
    batch_ids = [s["icefloe.batch-id"] for s in icefloe_summaries(ert, "contract.kill")]
    assert len(batch_ids) == len(set(batch_ids))  # no batch committed twice


@pytest.mark.spark
def test_spark_server_status(spark_server: SparkServer) -> None:
    icefloe = str(Path(sys.executable).parent / "icefloe")
    proc = subprocess.run(
        [icefloe, "spark-server", "status", "--json"], env=spark_server.env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["running"] and status["listening"] and status["remote"] == spark_server.remote
    assert status["master"] == "local[2]" and status["driver_memory"] == "1g"
    print(f"server RSS {status['rss_mb']} MB after the tests before it")


def test_a_conflicting_commit_is_searched_before_it_is_retried(
    engine: str, ert: Runtime, bucket: str, put_objects: PutObjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer commits between icefloe's snapshot search and its commit: icefloe's commit (a
    compare-and-swap on the searched head, commit.retry.num-retries=0 — no blind library retry)
    fails, and icefloe's loop searches again before committing, once."""
    from icefloe import metrics

    put_objects(bucket, {f"in/a{i}.jsonl": jsonl([{"id": i}]) for i in range(3)})
    define(ert, engine, "cas", f"s3://{bucket}/in/", "contract.cas")
    assert run(ert, "cas").status == "SUCCESS"
    table = ert.catalog.load_table("contract.cas")
    assert table.properties["commit.retry.num-retries"] == "0"
    put_objects(bucket, {f"in/b{i}.jsonl": jsonl([{"id": 10 + i}]) for i in range(3)})

    def conflicts() -> float:  # as a Prometheus scrape reads it
        return metrics.REGISTRY.get_sample_value("icefloe_commit_conflicts_total", {"ingestion": "cas"}) or 0.0

    before = conflicts()
    monkeypatch.setenv("ICEFLOE_FAULT_POINT", "before-commit:sleep=3")

    def external_commit_in_the_window() -> None:
        wait_for(lambda: bool(claimed(ert, "cas")), timeout=120, what="the claim")
        wait_for(lambda: _table_lock_held(ert, "contract.cas"), timeout=120, what="icefloe in its commit window")
        external = table.refresh()
        arrow = external.scan(limit=1).to_arrow().slice(0, 0)
        row: dict[str, list[Any]] = {f: [None] for f in arrow.schema.names}
        row["id"] = [999]
        external.append(pa.Table.from_pydict(row, schema=arrow.schema))

    writer = threading.Thread(target=external_commit_in_the_window)
    writer.start()
    second = run(ert, "cas")
    writer.join()

    assert second.status == "SUCCESS"
    assert conflicts() == before + 1  # one conflict, then a clean retry after the search
    assert ids(ert, "contract.cas") == [0, 1, 2, 10, 11, 12, 999]
    assert len(icefloe_summaries(ert, "contract.cas")) == 2  # each batch once


def _table_lock_held(rt: Runtime, table: str) -> bool:
    with rt.db.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(:t, 0)"
                ),
                {"t": table},
            ).first()
            is not None
        )
