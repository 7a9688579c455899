"""Schema evolution policies (``--schema-evolution``) on real files in S3, tables read back."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.types import DecimalType, DoubleType, LongType, StringType

from icefloe import advice, ingestions, schema_changes
from icefloe.runtime import Runtime
from tests.support.inprocess import files, ingest, run
from tests.support.tables import jsonl, load_table, rows

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def by_id(table: pa.Table) -> list[dict[str, Any]]:
    data = table.drop_columns(["_source_file", "_ingested_at"]).to_pylist()
    return sorted(data, key=lambda r: r["id"])


def test_add_columns_widens_parquet_int_and_float_in_the_commit_of_the_rows(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    narrow = pa.table(
        {
            "id": pa.array([1, 2], pa.int32()),
            "score": pa.array([0.5, 1.5], pa.float32()),
            "price": pa.array([Decimal("1.25"), Decimal("2.50")], pa.decimal128(10, 2)),
        }
    )
    put_objects(bucket, {"p/1.parquet": parquet(narrow)})
    ingest(rt, "widen", f"s3://{bucket}/p/", format="parquet")
    assert run(rt, "widen").status == "SUCCESS"

    wide = pa.table(
        {
            "id": pa.array([3_000_000_000], pa.int64()),  # beyond an int
            "score": pa.array([1e300], pa.float64()),  # beyond a float
            "price": pa.array([Decimal("1234567890.12")], pa.decimal128(12, 2)),
        }
    )
    put_objects(bucket, {"p/2.parquet": parquet(wide)})
    assert run(rt, "widen").status == "SUCCESS"

    table = load_table(rt, "it.widen")
    assert table.schema().find_field("id").field_type == LongType()
    assert table.schema().find_field("score").field_type == DoubleType()
    assert table.schema().find_field("price").field_type == DecimalType(12, 2)
    assert [r["id"] for r in by_id(rows(rt, "it.widen"))] == [1, 2, 3_000_000_000]
    assert by_id(rows(rt, "it.widen"))[-1]["score"] == 1e300
    # One snapshot per run: the widening went out with the rows that needed it, not before them.
    snapshots = table.metadata.snapshots
    assert len(snapshots) == 2
    assert snapshots[0].schema_id != snapshots[1].schema_id == table.schema().schema_id

    history = schema_changes.history(rt.db, ingestions.get(rt.db, "widen"))
    assert [(v.status, v.file) for v in history] == [
        ("CREATED", f"s3://{bucket}/p/1.parquet"),
        ("APPLIED", f"s3://{bucket}/p/2.parquet"),
    ]
    assert history[1].schema_id == table.schema().schema_id
    assert history[1].description == "widens id int → long, score float → double, price decimal(10,2) → decimal(12,2)"

    # Another scale is no widening: the value would change. The file fails naming the column.
    put_objects(
        bucket, {"p/3.parquet": parquet(pa.table({"price": pa.array([Decimal("1.125")], pa.decimal128(12, 3))}))}
    )
    assert run(rt, "widen").status == "PARTIAL"
    failed = files(rt, "widen")[f"s3://{bucket}/p/3.parquet"]
    assert failed["error_type"] == "SchemaMismatch"
    assert "'price'" in failed["error_message"]


def test_add_columns_adds_a_new_json_field(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {"j/1.jsonl": jsonl([{"id": 1}])})
    ingest(rt, "newfield", f"s3://{bucket}/j/")
    run(rt, "newfield")
    put_objects(bucket, {"j/2.jsonl": jsonl([{"id": 2, "email": "a@example.com"}])})
    assert run(rt, "newfield").status == "SUCCESS"
    assert load_table(rt, "it.newfield").schema().find_field("email").field_type == StringType()
    assert by_id(rows(rt, "it.newfield")) == [{"id": 1, "email": None}, {"id": 2, "email": "a@example.com"}]
    assert len(load_table(rt, "it.newfield").metadata.snapshots) == 2


def test_a_csv_type_change_fails_the_file_naming_the_column(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {"c/1.csv": b"id,amount\n1,10\n"})
    ingest(rt, "csvtype", f"s3://{bucket}/c/", format="csv")
    run(rt, "csvtype")
    put_objects(bucket, {"c/2.csv": b"id,amount\n2,ten\n"})
    assert run(rt, "csvtype").status == "PARTIAL"
    failed = files(rt, "csvtype")[f"s3://{bucket}/c/2.csv"]
    assert failed["error_type"] == "SchemaMismatch"
    assert "'amount'" in failed["error_message"]


def test_rescue_keeps_the_schema_and_rescues_unknown_and_unfitting_values(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"r/1.csv": b"id,amount\n1,10\n"})
    ingest(rt, "rescue", f"s3://{bucket}/r/", format="csv", schema_evolution="rescue")
    assert run(rt, "rescue").status == "SUCCESS"
    schema_before = load_table(rt, "it.rescue").schema()
    put_objects(bucket, {"r/2.csv": b"id,amount,extra\n2,20,x\n3,ten,\n4,40,y\n"})
    assert run(rt, "rescue").status == "SUCCESS"

    table = load_table(rt, "it.rescue")
    assert table.schema() == schema_before  # never changed after creation
    got = by_id(rows(rt, "it.rescue"))
    assert [(r["id"], r["amount"]) for r in got] == [(1, 10), (2, 20), (3, None), (4, 40)]
    rescued = {r["id"]: json.loads(r["_rescued_data"]) if r["_rescued_data"] else None for r in got}
    assert rescued == {1: None, 2: {"extra": "x"}, 3: {"amount": "ten"}, 4: {"extra": "y"}}


def test_rescue_chosen_after_the_table_was_made_adds_the_rescue_column_first(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    """A table created under add-columns has no ``_rescued_data``: switching to rescue must add it
    before any file is conformed, or the misfits of the next files would have nowhere to go."""
    put_objects(bucket, {"late/1.jsonl": jsonl([{"id": 1, "amount": 10}])})
    ingest(rt, "late_rescue", f"s3://{bucket}/late/")
    assert run(rt, "late_rescue").status == "SUCCESS"
    assert "_rescued_data" not in load_table(rt, "it.late_rescue").schema().column_names
    ingestions.update(rt.db, "late_rescue", {"schema_evolution": "rescue"})
    put_objects(bucket, {"late/2.jsonl": jsonl([{"id": 2, "amount": 20.5}, {"id": 3, "amount": 30}])})
    assert run(rt, "late_rescue").status == "SUCCESS"

    got = by_id(rows(rt, "it.late_rescue"))
    assert [(r["id"], r["amount"]) for r in got] == [(1, 10), (2, None), (3, 30)]
    assert [json.loads(r["_rescued_data"]) if r["_rescued_data"] else None for r in got] == [
        None,
        {"amount": 20.5},
        None,
    ]


def test_fail_fails_a_file_with_a_new_column_naming_it(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {"f/1.jsonl": jsonl([{"id": 1}])})
    ingest(rt, "strict", f"s3://{bucket}/f/")
    run(rt, "strict")
    ingestions.update(rt.db, "strict", {"schema_evolution": "fail"})  # as `ingestion update` / PATCH do
    put_objects(bucket, {"f/2.jsonl": jsonl([{"id": 2, "email": "a@example.com"}])})
    assert run(rt, "strict").status == "PARTIAL"
    failed = files(rt, "strict")[f"s3://{bucket}/f/2.jsonl"]
    assert failed["status"] == "FAILED"
    assert failed["error_type"] == "SchemaMismatch"
    assert "'email'" in failed["error_message"]
    assert "email" not in load_table(rt, "it.strict").schema().column_names


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_approve_holds_files_until_the_change_is_decided(
    rt: Runtime, bucket: str, put_objects: PutObjects, decision: str
) -> None:
    put_objects(bucket, {"a/1.jsonl": jsonl([{"id": 1}])})
    ingestion = ingest(rt, "gate", f"s3://{bucket}/a/", schema_evolution="approve")
    run(rt, "gate")
    put_objects(
        bucket,
        {
            "a/2.jsonl": jsonl([{"id": 2, "email": "b@example.com"}]),
            "a/3.jsonl": jsonl([{"email": "c@example.com", "id": 3}]),
            "a/4.jsonl": jsonl([{"id": 4}]),
        },
    )
    holding = run(rt, "gate")
    assert holding.status == "SUCCESS"
    assert "2 file(s) HELD: their schema change waits for approval (icefloe schema pending gate)" in (
        advice.run_warnings(rt, ingestion, holding)
    )
    ledger_rows = files(rt, "gate")
    held = {k for k, v in ledger_rows.items() if v["status"] == "HELD"}
    assert held == {f"s3://{bucket}/a/2.jsonl", f"s3://{bucket}/a/3.jsonl"}
    assert ledger_rows[f"s3://{bucket}/a/2.jsonl"]["error_type"] == "SchemaChangePending"
    assert "adds email (string)" in ledger_rows[f"s3://{bucket}/a/2.jsonl"]["error_message"]
    assert [r["id"] for r in by_id(rows(rt, "it.gate"))] == [1, 4]

    (change,) = schema_changes.pending(rt.db, ingestion)
    assert change.files == 2 and change.description == "adds email (string)"
    assert change.first_file in held
    assert run(rt, "gate").status == "SUCCESS"  # held files are not claimed again
    assert [r["id"] for r in by_id(rows(rt, "it.gate"))] == [1, 4]

    if decision == "approve":
        done = schema_changes.approve(rt.db, rt.catalog, ingestion, change.id, actor="ops-token")
        assert done.files == 2
        assert run(rt, "gate").status == "SUCCESS"
        assert by_id(rows(rt, "it.gate")) == [
            {"id": 1, "email": None},
            {"id": 2, "email": "b@example.com"},
            {"id": 3, "email": "c@example.com"},
            {"id": 4, "email": None},
        ]
        history = schema_changes.history(rt.db, ingestion)
        assert [(v.status, v.approved_by) for v in history] == [("CREATED", None), ("APPROVED", "ops-token")]
        assert history[-1].schema_id == load_table(rt, "it.gate").schema().schema_id
        # A file needing the approved change later is not held again.
        put_objects(bucket, {"a/5.jsonl": jsonl([{"id": 5, "email": "e@example.com"}])})
        assert run(rt, "gate").status == "SUCCESS"
        assert files(rt, "gate")[f"s3://{bucket}/a/5.jsonl"]["status"] == "SUCCESS"
    else:
        done = schema_changes.reject(rt.db, ingestion, change.id, actor="cli")
        assert done.files == 2
        after = files(rt, "gate")
        for key in held:
            assert after[key]["status"] == "FAILED"
            assert after[key]["error_type"] == "SchemaRejected"
            assert "rejected by cli: adds email (string)" in after[key]["error_message"]
        assert run(rt, "gate").status == "SUCCESS"  # not retried by themselves
        assert "email" not in load_table(rt, "it.gate").schema().column_names
    assert schema_changes.pending(rt.db, ingestion) == []


def test_schema_hints_type_the_named_columns_and_infer_the_rest(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"h/1.jsonl": jsonl([{"id": 1, "amount": "12.50", "at": "2025-01-01T10:00:00+02:00"}])})
    ingest(rt, "hints", f"s3://{bucket}/h/", schema={"amount": "decimal(12,2)"})
    assert run(rt, "hints").status == "SUCCESS"
    put_objects(bucket, {"h/2.jsonl": jsonl([{"id": 2, "amount": "1.00", "note": "later"}])})
    assert run(rt, "hints").status == "SUCCESS"
    schema = load_table(rt, "it.hints").schema()
    assert schema.find_field("amount").field_type == DecimalType(12, 2)
    assert schema.find_field("id").field_type == LongType()
    assert str(schema.find_field("at").field_type) == "timestamptz"
    assert schema.find_field("note").field_type == StringType()  # inferred and added later
    got = by_id(rows(rt, "it.hints"))
    assert [(r["amount"], r["note"]) for r in got] == [(Decimal("12.50"), None), (Decimal("1.00"), "later")]
