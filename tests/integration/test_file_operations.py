"""Per-file operations as an operator uses them (`icefloe files retry|skip|reingest NAME KEY`): real
files in real S3, the table read back, the ledger and the file's history checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from icefloe import file_operations, ingestions, ledger
from icefloe.errors import ConfigurationError, ConflictError
from icefloe.runtime import Runtime
from tests.support.cli import cli, one_json
from tests.support.inprocess import files, ingest, run
from tests.support.tables import icefloe_snapshots, ids_by_file, jsonl, load_table, rows

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def _history(rt: Runtime, name: str, uri: str) -> list[dict[str, object]]:
    with rt.db.connect() as conn:
        return ledger.attempts(conn, int(str(files(rt, name)[uri]["id"])))


def test_retry_one_file_after_mending_the_ingestion(
    rt: Runtime, icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects
) -> None:
    """A CSV whose producer writes `n/a` for a missing number fails; the operator teaches the
    ingestion that token and retries that one file: it is ingested, once."""
    put_objects(bucket, {"in/a.csv": b"id,qty\n1,5\n", "in/b.csv": b"id,qty\n2,n/a\n3,7\n"})
    ingest(rt, "retry1", f"s3://{bucket}/in/", format="csv")
    first = run(rt, "retry1")
    bad = f"s3://{bucket}/in/b.csv"
    assert first.status == "PARTIAL" and files(rt, "retry1")[bad]["status"] == "FAILED"

    with pytest.raises(ConflictError, match="it is SUCCESS; to read it again use reingest"):
        file_operations.retry_file(rt.db, ingestions.get(rt.db, "retry1"), "a.csv", actor="cli")
    cli(icefloe_env, "ingestion", "update", "retry1", "--csv-null-values", "n/a")
    out = one_json(cli(icefloe_env, "files", "retry", "retry1", "b.csv", "--json").stdout)
    assert (out["file_path"], out["status"], out["action"]) == (bad, "DISCOVERED", "retry")

    second = run(rt, "retry1")
    assert (second.status, second.files_succeeded) == ("SUCCESS", 1)
    by_id = dict(zip(*(rows(rt, "it.retry1").column(c).to_pylist() for c in ("id", "qty")), strict=True))
    assert by_id == {1: 5, 2: None, 3: 7}
    asked = [a for a in _history(rt, "retry1", bad) if a["worker_id"] == "operator cli"]
    assert [(a["status"], a["error_message"]) for a in asked] == [("DISCOVERED", "retry requested")]


def test_skip_sets_a_file_aside_until_it_changes(
    rt: Runtime, icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects
) -> None:
    broken = f"s3://{bucket}/in/broken.jsonl"
    put_objects(bucket, {"in/good.jsonl": jsonl([{"id": 1}]), "in/broken.jsonl": b'{"id": 2\n'})
    ingest(rt, "skip1", f"s3://{bucket}/in/")
    assert run(rt, "skip1").status == "PARTIAL"

    reason = "producer bug JIRA-7, [not] ours"  # printed literally
    out = cli(icefloe_env, "files", "skip", "skip1", "broken.jsonl", "--reason", reason)
    assert f"{broken}: skip done, now SKIPPED" in out.stdout
    entry = files(rt, "skip1")[broken]
    assert (entry["status"], entry["error_type"], entry["error_message"]) == ("SKIPPED", "SkippedByOperator", reason)
    listed = cli(icefloe_env, "files", "skip1", "--status", "SKIPPED").stdout
    assert "broken.jsonl" in listed and "[not] ours" in listed

    again = run(rt, "skip1")  # neither retried nor listed as new
    assert (again.files_new, again.files_changed, again.files_failed, again.files_succeeded) == (0, 0, 0, 0)
    assert files(rt, "skip1")[broken]["status"] == "SKIPPED"
    # a SUCCESS file is in the table already: skipping it is refused, with the reason
    refused = cli(icefloe_env, "files", "skip", "skip1", "good.jsonl", "--reason", "x", expect=2)
    assert "cannot skip" in refused.stderr and "it is SUCCESS" in refused.stderr

    put_objects(bucket, {"in/broken.jsonl": jsonl([{"id": 2}])})  # the producer fixed it: a new version
    fixed = run(rt, "skip1")
    assert (fixed.files_changed, fixed.files_succeeded) == (1, 1)
    assert sorted(rows(rt, "it.skip1").column("id").to_pylist()) == [1, 2]


def test_reingest_under_replace_replaces_the_rows_once(
    rt: Runtime, icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects
) -> None:
    a, b = f"s3://{bucket}/in/a.jsonl", f"s3://{bucket}/in/b.jsonl"
    put_objects(bucket, {"in/a.jsonl": jsonl([{"id": 1}, {"id": 2}]), "in/b.jsonl": jsonl([{"id": 3}])})
    ingest(rt, "re1", f"s3://{bucket}/in/")
    assert run(rt, "re1").status == "SUCCESS"

    out = one_json(cli(icefloe_env, "files", "reingest", "re1", "a.jsonl", "--json").stdout)
    assert (out["status"], out["version"]) == ("DISCOVERED", 2)
    again = run(rt, "re1")
    assert (again.status, again.files_succeeded, again.records_ingested) == ("SUCCESS", 1, 2)
    assert ids_by_file(rows(rt, "it.re1")) == {a: [1, 2], b: [3]}  # a's rows once, b untouched
    entry = files(rt, "re1")[a]
    assert (entry["status"], entry["version"]) == ("SUCCESS", 2)
    last = icefloe_snapshots(load_table(rt, "it.re1"))[-1]
    assert last["icefloe.run-id"] == str(again.id)

    with pytest.raises(ConflictError, match="already waiting"):
        # once: DISCOVERED, waiting for the next run; twice: refused (it is already waiting)
        for _ in range(2):
            file_operations.reingest_file(rt.db, ingestions.get(rt.db, "re1"), "b.jsonl", actor="cli")


def test_reingest_under_append_needs_consent(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {"in/a.jsonl": jsonl([{"id": 1}])})
    i = ingest(rt, "re2", f"s3://{bucket}/in/", on_change="append")
    assert run(rt, "re2").status == "SUCCESS"
    with pytest.raises(ConfigurationError, match="--allow-duplicates"):
        file_operations.reingest_file(rt.db, i, "a.jsonl", actor="cli")
    file_operations.reingest_file(rt.db, i, "a.jsonl", actor="cli", allow_duplicates=True)
    assert run(rt, "re2").files_succeeded == 1
    assert rows(rt, "it.re2").column("id").to_pylist() == [1, 1]  # what the operator asked for


def test_a_file_under_a_lease_is_never_touched(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    """A batch may be committing the file right now: every action is refused while it is PROCESSING."""
    put_objects(bucket, {"in/a.jsonl": b'{"id": 1\n'})
    i = ingest(rt, "lease1", f"s3://{bucket}/in/", max_retries=5)
    assert run(rt, "lease1").status == "PARTIAL"
    file_operations.retry_file(rt.db, i, "a.jsonl", actor="cli")
    with rt.db.begin() as conn:
        batch = ledger.claim_batch(
            conn,
            ingestion_id=i.id,
            run_id=None,
            owner="test-worker",
            lease_seconds=300,
            max_files=10,
            max_bytes=10**9,
            max_retries=5,
        )
    assert batch is not None and [f.file_path for f in batch.files] == [f"s3://{bucket}/in/a.jsonl"]
    for act in (
        lambda: file_operations.retry_file(rt.db, i, "a.jsonl", actor="cli"),
        lambda: file_operations.skip_file(rt.db, i, "a.jsonl", "no", actor="cli"),
        lambda: file_operations.reingest_file(rt.db, i, "a.jsonl", actor="cli"),
    ):
        with pytest.raises(ConflictError, match="is being processed"):
            act()
    assert files(rt, "lease1")[f"s3://{bucket}/in/a.jsonl"]["status"] == "PROCESSING"
