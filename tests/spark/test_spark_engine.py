"""The engine contract with the Spark engine, against a real Spark Connect server, S3 and PostgreSQL:
pagination over many files, change detection, bad files isolated, exactly once after SIGKILL, and
one catalog shared with pyiceberg in both directions."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest

from icefloe import ingestions, ledger
from icefloe.runtime import Runtime
from tests.support.inprocess import run
from tests.support.spark import SparkServer, define

if TYPE_CHECKING:
    from tests.support.services import PutObjects

pytestmark = pytest.mark.spark


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def rows(rt: Runtime, table: str) -> pa.Table:
    return rt.catalog.load_table(table).scan().to_arrow()


def ids(rt: Runtime, table: str) -> list[int]:
    return sorted(rows(rt, table).column("id").to_pylist())


def statuses(rt: Runtime, name: str) -> dict[str, dict[str, Any]]:
    i = ingestions.get(rt.db, name)
    with rt.db.connect() as conn:
        return {str(r["file_path"]): r for r in ledger.list_files(conn, i.id, limit=100_000)}


def icefloe_summaries(rt: Runtime, table: str) -> list[dict[str, str]]:
    t = rt.catalog.load_table(table)
    return [
        dict(s.summary.additional_properties)
        for s in t.metadata.snapshots
        if s.summary is not None and "icefloe.batch-id" in s.summary.additional_properties
    ]


def test_many_files_in_few_batches(srt: Runtime, bucket: str, put_objects: PutObjects) -> None:
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
    define(srt, "many", f"s3://{bucket}/events/", "sp.many", max_files_per_commit=120)

    result = run(srt, "many")

    assert (result.status, result.files_succeeded, result.files_failed) == ("SUCCESS", n_files, 0)
    assert ids(srt, "sp.many") == list(range(n_files * per_file))
    summaries = icefloe_summaries(srt, "sp.many")
    assert [int(s["icefloe.file-count"]) for s in summaries] == [120, 120, 60]  # one commit per batch
    assert result.snapshots_committed == 3
    ledger_rows = statuses(srt, "many")
    assert {r["status"] for r in ledger_rows.values()} == {"SUCCESS"}
    by_batch = {s["icefloe.batch-id"] for s in summaries}
    table = rows(srt, "sp.many")
    assert set(table.column("_source_file").to_pylist()) == set(ledger_rows)
    assert str(table.schema.field("_ingested_at").type) == "timestamp[us, tz=UTC]"
    snapshot_ids = {r["snapshot_id"] for r in ledger_rows.values()}
    t = srt.catalog.load_table("sp.many")
    assert {
        str(t.snapshot_by_id(s).summary.additional_properties["icefloe.batch-id"]) for s in snapshot_ids
    } == by_batch

    again = run(srt, "many")  # nothing new: no commit
    assert (again.files_succeeded, again.snapshots_committed) == (0, 0)


def test_changed_file_replaces_its_rows_atomically(srt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {f"in/f{i}.jsonl": jsonl([{"id": i * 10 + j} for j in range(3)]) for i in range(4)})
    define(srt, "chg", f"s3://{bucket}/in/", "sp.chg")
    assert run(srt, "chg").status == "SUCCESS"
    put_objects(bucket, {"in/f2.jsonl": jsonl([{"id": 900}, {"id": 901}])})  # a new version
    put_objects(bucket, {"in/f9.jsonl": jsonl([{"id": 990}])})  # and a new file

    second = run(srt, "chg")

    assert (second.status, second.files_changed, second.files_succeeded) == ("SUCCESS", 1, 2)
    assert ids(srt, "sp.chg") == [0, 1, 2, 10, 11, 12, 30, 31, 32, 900, 901, 990]
    t = srt.catalog.load_table("sp.chg")
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


def test_bad_files_are_isolated(srt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    good = {f"in/good-{i}.jsonl": jsonl([{"id": i * 10 + j, "v": "x"} for j in range(2)]) for i in range(6)}
    bad = {
        "in/bad-json.jsonl": b'{"id": 1000, "v": "x"}\n{"id": 1001, "v": \n',
        "in/bad-gzip.jsonl.gz": gzip.compress(jsonl([{"id": 2000}]))[:-12] + b"garbage!",
    }
    put_objects(bucket, {**good, **bad})
    define(srt, "bad", f"s3://{bucket}/in/", "sp.bad", max_retries=0)

    result = run(srt, "bad")

    assert (result.status, result.files_succeeded, result.files_failed) == ("PARTIAL", 6, 2)
    assert ids(srt, "sp.bad") == sorted(i * 10 + j for i in range(6) for j in range(2))
    ledger_rows = statuses(srt, "bad")
    for key in bad:
        row = ledger_rows[f"s3://{bucket}/{key}"]
        assert row["status"] == "FAILED"
        assert "\n" not in row["error_message"] and len(row["error_message"]) < 600
        assert row["error_message"].startswith(f"s3://{bucket}/{key}: ")
    assert ledger_rows[f"s3://{bucket}/in/bad-json.jsonl"]["error_type"] == "MalformedJSON"
    assert len(icefloe_summaries(srt, "sp.bad")) == 1  # the good files: one commit


def test_table_written_by_spark_reads_in_pyiceberg_and_back(srt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    """One catalog: an ingestion switches engines and keeps its table and history."""
    put_objects(bucket, {f"in/a{i}.jsonl": jsonl([{"id": i, "ts": "2025-01-02T03:04:05Z"}]) for i in range(3)})
    define(srt, "both", f"s3://{bucket}/in/", "sp.both", engine="arrow", schema={"id": "long", "ts": "timestamptz"})
    assert run(srt, "both").status == "SUCCESS"  # pyiceberg creates and writes the table

    ingestions.update(srt.db, "both", {"engine": "spark"})
    put_objects(bucket, {f"in/b{i}.jsonl": jsonl([{"id": 100 + i, "ts": "2025-06-01T00:00:00Z"}]) for i in range(3)})
    assert run(srt, "both").status == "SUCCESS"  # Spark appends to pyiceberg's table

    table = rows(srt, "sp.both")  # pyiceberg reads Spark's snapshot
    assert sorted(table.column("id").to_pylist()) == [0, 1, 2, 100, 101, 102]
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert len(icefloe_summaries(srt, "sp.both")) == 2  # one batch per engine, each with its batch id

    from icefloe.engines.spark.session import session, target_for

    spark = session(target_for(srt.catalog, srt.settings, None))
    counted = spark.sql("SELECT count(*) AS n, count(DISTINCT _source_file) AS f FROM icefloe.sp.both").collect()[0]
    assert (counted["n"], counted["f"]) == (6, 6)  # Spark reads both engines' rows

    ingestions.update(srt.db, "both", {"engine": "arrow"})
    put_objects(bucket, {"in/c0.jsonl": jsonl([{"id": 200, "ts": "2025-07-01T00:00:00Z"}])})
    assert run(srt, "both").status == "SUCCESS"  # pyiceberg appends to a table Spark wrote last
    assert spark.sql("SELECT count(*) AS n FROM icefloe.sp.both").collect()[0]["n"] == 7


@pytest.mark.parametrize("point", ["after-write", "after-commit"])
def test_exactly_once_after_sigkill(
    point: str, srt: Runtime, spark_env: dict[str, str], bucket: str, put_objects: PutObjects, tmp_path: Path
) -> None:
    seeded = list(range(60))
    put_objects(bucket, {f"in/f{i:02d}.jsonl": jsonl([{"id": i * 3 + j} for j in range(3)]) for i in range(20)})
    env = {**spark_env, "ICEFLOE_LEASE_SECONDS": "3"}
    icefloe = str(Path(sys.executable).parent / "icefloe")
    created = subprocess.run(
        [
            *(icefloe, "ingestion", "create", "kill", "--source", f"s3://{bucket}/in/", "--format", "jsonl"),
            *("--table", "sp.kill", "--max-files-per-commit", "8", "--engine", "spark"),
            *("--spark-remote", spark_env["ICEFLOE_SPARK_REMOTE"], "--json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["engine"] == "spark"

    killed = subprocess.run(
        [icefloe, "run", "kill", "--json"],
        env={**env, "ICEFLOE_FAULT_POINT": point},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]

    import time

    time.sleep(4)  # the dead worker's lease expires
    final = subprocess.run([icefloe, "run", "kill", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]

    assert ids(srt, "sp.kill") == sorted(i * 3 + j for i in range(20) for j in range(3)) == seeded
    assert {r["status"] for r in statuses(srt, "kill").values()} == {"SUCCESS"}
    batch_ids = [s["icefloe.batch-id"] for s in icefloe_summaries(srt, "sp.kill")]
    assert len(batch_ids) == len(set(batch_ids))  # no batch committed twice


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


_CONFLICT_TRIGGER = """
CREATE TABLE icefloe_test_conflicts (fail_next int NOT NULL, calls int NOT NULL);
INSERT INTO icefloe_test_conflicts VALUES (1, 0);
CREATE FUNCTION icefloe_test_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE icefloe_test_conflicts SET calls = calls + 1;
  IF (SELECT fail_next FROM icefloe_test_conflicts) > 0 THEN
    UPDATE icefloe_test_conflicts SET fail_next = fail_next - 1;
    RETURN NULL;  -- the catalog's compare-and-swap updates no row: a commit conflict
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER icefloe_test_conflict BEFORE UPDATE ON iceberg_tables
  FOR EACH ROW EXECUTE FUNCTION icefloe_test_conflict();
"""


def test_spark_does_not_retry_a_conflicting_commit_blindly(
    srt: Runtime, bucket: str, put_objects: PutObjects, caplog: pytest.LogCaptureFixture
) -> None:
    """A conflict on a Spark-staged batch comes back to icefloe (the commit is pyiceberg's
    compare-and-swap, with commit.retry.num-retries=0), whose loop searches the snapshots before
    committing again (a blind library retry would skip the search)."""
    import logging

    from sqlalchemy import text

    put_objects(bucket, {f"in/a{i}.jsonl": jsonl([{"id": i}]) for i in range(3)})
    define(srt, "cas", f"s3://{bucket}/in/", "sp.cas")
    assert run(srt, "cas").status == "SUCCESS"
    assert srt.catalog.load_table("sp.cas").properties["commit.retry.num-retries"] == "0"
    with srt.db.begin() as conn:
        conn.execute(text(_CONFLICT_TRIGGER))
    put_objects(bucket, {f"in/b{i}.jsonl": jsonl([{"id": 10 + i}]) for i in range(3)})

    with caplog.at_level(logging.INFO, logger="icefloe.commit"):
        second = run(srt, "cas")

    assert second.status == "SUCCESS"
    assert any("commit conflict on sp.cas" in r.getMessage() for r in caplog.records)
    with srt.db.connect() as conn:
        calls = conn.execute(text("SELECT calls FROM icefloe_test_conflicts")).scalar_one()
    assert calls == 2  # the failed attempt, then icefloe's retry after the search: no third
    assert ids(srt, "sp.cas") == [0, 1, 2, 10, 11, 12]
    assert len(icefloe_summaries(srt, "sp.cas")) == 2
