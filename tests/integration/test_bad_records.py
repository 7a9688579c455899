"""--on-bad-record skip|quarantine: real files in real S3, tables read back.

Each file holds good and bad records (broken JSON lines, CSV rows of the wrong arity, values that
do not convert); the good ones land in the table, the bad ones are counted (skip) or land in
``<table>__quarantine`` with their line and text (quarantine); over --max-bad-records the file is
FAILED and nothing of it is committed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text

from icefloe import ingestions
from icefloe.runtime import Runtime
from icefloe.schema_documents import load_schema_file
from icefloe.tables import load_table as try_load
from icefloe.validate import validate
from tests.support.cli import cli
from tests.support.inprocess import files, ingest, run
from tests.support.tables import ids_by_file, load_table

if TYPE_CHECKING:
    from tests.support.services import PutObjects

JSONL = b'{"id": 1, "name": "a"}\n{"id": 2, "name": \n{"id": 3, "name": "c"}\nnot json at all\n{"id": 4, "name": "d"}\n'
CSV = b'id,name\n10,"x\ny"\n11\n12,z,extra\n13,w\n'
# A value that does not convert to the declared long: row 3 (line 3) of the file.
TYPED = b"id,name\n20,p\nabc,q\n22,r\n"


def _schema(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"id": "long", "name": "string"}))
    return load_schema_file(str(path))


@pytest.mark.parametrize("policy", ["skip", "quarantine"])
def test_bad_records_are_skipped_or_quarantined_and_good_ones_land(
    rt: Runtime, bucket: str, put_objects: PutObjects, tmp_path: Path, policy: str
) -> None:
    put_objects(bucket, {"j/a.jsonl": JSONL, "c/a.csv": CSV, "t/a.csv": TYPED})
    ingest(rt, "j", f"s3://{bucket}/j/", format="jsonl", on_bad_record=policy)
    ingest(rt, "c", f"s3://{bucket}/c/", format="csv", on_bad_record=policy)
    ingest(rt, "t", f"s3://{bucket}/t/", format="csv", schema=_schema(tmp_path), on_bad_record=policy)

    expected = {
        "j": ([1, 3, 4], [(2, '{"id": 2, "name": '), (4, "not json at all")]),
        "c": ([10, 13], [(4, "11"), (5, "12,z,extra")]),  # line 3 is the quoted newline's
        "t": ([20, 22], [(3, "abc,q")]),
    }
    for name, (ids, bad) in expected.items():
        result = run(rt, name)
        assert result.status == "SUCCESS", result.error_message
        assert (result.records_ingested, result.records_rejected) == (len(ids), len(bad))
        [entry] = files(rt, name).values()
        assert (entry["status"], entry["records_ingested"], entry["records_rejected"]) == (
            "SUCCESS",
            len(ids),
            len(bad),
        )
        source = str(entry["file_path"])
        assert ids_by_file(load_table(rt, f"it.{name}").scan().to_arrow()) == {source: ids}
        quarantine = try_load(rt.catalog, f"it.{name}__quarantine")
        if policy == "skip":
            assert quarantine is None
            continue
        assert quarantine is not None
        got = quarantine.scan().to_arrow().sort_by("_row_number").to_pylist()
        assert [(r["_row_number"], r["_raw"]) for r in got] == bad
        assert {r["_source_file"] for r in got} == {source}
        assert all(r["_error"] and r["_ingested_at"] is not None for r in got)
    assert "x\ny" in load_table(rt, "it.c").scan().to_arrow().column("name").to_pylist()


@pytest.mark.parametrize("limit", ["1", "30%"])
def test_over_the_limit_the_file_fails_and_nothing_of_it_is_committed(
    rt: Runtime, bucket: str, put_objects: PutObjects, limit: str
) -> None:
    """a.jsonl holds 2 bad of 5 records (40 %): over 1 and over 30 %; b.jsonl (1 bad of 5) lands."""
    good_enough = b'{"id": 9}\n{"id": 8}\n{broken\n{"id": 7}\n{"id": 6}\n'  # 1 bad of 5: 20 %
    put_objects(bucket, {"in/a.jsonl": JSONL, "in/b.jsonl": good_enough})
    ingest(rt, "lim", f"s3://{bucket}/in/", format="jsonl", on_bad_record="quarantine", max_bad_records=limit)

    result = run(rt, "lim")

    assert result.status == "PARTIAL"
    ledger = files(rt, "lim")
    a, b = ledger[f"s3://{bucket}/in/a.jsonl"], ledger[f"s3://{bucket}/in/b.jsonl"]
    assert (a["status"], a["error_type"]) == ("FAILED", "TooManyBadRecords"), a["error_message"]
    assert "line 2" in a["error_message"] and "a.jsonl" in a["error_message"]
    assert (b["status"], b["records_rejected"]) == ("SUCCESS", 1)
    assert ids_by_file(load_table(rt, "it.lim").scan().to_arrow()) == {b["file_path"]: [6, 7, 8, 9]}
    quarantined = load_table(rt, "it.lim__quarantine").scan().to_arrow()
    assert quarantined.column("_source_file").to_pylist() == [b["file_path"]]  # none of a's


def test_fail_file_stays_the_default(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {"in/a.jsonl": JSONL})
    ingest(rt, "ff", f"s3://{bucket}/in/", format="jsonl")
    assert run(rt, "ff").status == "PARTIAL"
    [entry] = files(rt, "ff").values()
    assert (entry["status"], entry["error_type"]) == ("FAILED", "MalformedJSON")
    assert try_load(rt.catalog, "it.ff__quarantine") is None


def test_a_value_the_table_cannot_hold_is_quarantined_and_the_rest_lands(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    """The table has ``id`` long (from the first file); a later file's ids are text, one of which
    is not a number: that record is bad, "7" converts as it always did."""
    put_objects(bucket, {"in/a.jsonl": b'{"id": 1}\n'})
    ingest(rt, "conv", f"s3://{bucket}/in/", format="jsonl", on_bad_record="quarantine")
    assert run(rt, "conv").status == "SUCCESS"
    put_objects(bucket, {"in/b.jsonl": b'{"id": "7"}\n{"id": "x"}\n{"id": "8"}\n'})

    result = run(rt, "conv")

    assert (result.status, result.records_ingested, result.records_rejected) == ("SUCCESS", 2, 1)
    table = load_table(rt, "it.conv").scan().to_arrow()
    assert sorted(table.column("id").to_pylist()) == [1, 7, 8]
    [bad] = load_table(rt, "it.conv__quarantine").scan().to_arrow().to_pylist()
    assert (bad["_row_number"], bad["_raw"]) == (2, '{"id": "x"}')
    assert "'id'" in bad["_error"] and "'x'" in bad["_error"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_streamed_file_is_salvaged_chunk_by_chunk(
    rt: Runtime, bucket: str, put_objects: PutObjects, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """Files above SMALL_FILE_BYTES are streamed (here: above 1 KiB); their bad records too are
    found, in a parser child, and quarantined with their line numbers."""
    from icefloe.engines import arrow

    monkeypatch.setattr(arrow, "SMALL_FILE_BYTES", 1024)
    n = 5000
    if fmt == "jsonl":
        lines = [b'{"id": %d}' % i if i % 1000 != 500 else b'{"id": %d' % i for i in range(n)]
        body, first_line = b"\n".join(lines) + b"\n", 1
    else:
        lines = [b"%d,v" % i if i % 1000 != 500 else b"%d" % i for i in range(n)]
        body, first_line = b"id,name\n" + b"\n".join(lines) + b"\n", 2
    put_objects(bucket, {f"in/big.{fmt}": body})
    ingest(rt, "big", f"s3://{bucket}/in/", format=fmt, on_bad_record="quarantine")

    result = run(rt, "big")

    bad_ids = [i for i in range(n) if i % 1000 == 500]
    assert (result.status, result.records_ingested, result.records_rejected) == ("SUCCESS", n - 5, 5)
    ids = load_table(rt, "it.big").scan().to_arrow().column("id").to_pylist()
    assert sorted(ids) == [i for i in range(n) if i not in bad_ids]
    quarantined = load_table(rt, "it.big__quarantine").scan().to_arrow().sort_by("_row_number")
    assert quarantined.column("_row_number").to_pylist() == [i + first_line for i in bad_ids]


def _ledger_and_catalog(rt: Runtime) -> tuple[list[dict[str, Any]], list[Any], dict[str, list[int]]]:
    with rt.db.connect() as conn:
        ledger = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM files ORDER BY id"))]
        runs = [tuple(r) for r in conn.execute(text("SELECT * FROM runs ORDER BY id"))]
    snapshots = {}
    for namespace in rt.catalog.list_namespaces():
        for ident in rt.catalog.list_tables(namespace):
            table = rt.catalog.load_table(ident)
            snapshots[".".join(ident)] = [s.snapshot_id for s in table.metadata.snapshots]
    return ledger, runs, snapshots


def test_validate_reports_records_bad_records_and_new_columns_and_changes_nothing(
    rt: Runtime, bucket: str, put_objects: PutObjects, icefloe_env: dict[str, str]
) -> None:
    put_objects(bucket, {"in/a.jsonl": b'{"id": 1}\n'})
    ingest(rt, "val", f"s3://{bucket}/in/", format="jsonl", on_bad_record="quarantine", max_bad_records="1")
    # Before any run: no table; every column would be new.
    [report] = validate(rt, ingestions.get(rt.db, "val"))["items"]
    assert (report["status"], report["records"], report["new_columns"]) == (
        "NEW",
        1,
        {"id": "long"},
    )  # Iceberg type names, as `schema pending`
    assert try_load(rt.catalog, "it.val") is None
    assert run(rt, "val").status == "SUCCESS"
    put_objects(
        bucket,
        {
            "in/b.jsonl": b'{"id": 2, "colour": "red"}\n{"id": \n{"id": 3}\n',
            "in/c.jsonl": b"{broken\n{broken too\n{}\n",
        },
    )
    before = _ledger_and_catalog(rt)

    proc = cli(icefloe_env, "validate", "val", "--json")
    reports = {r["file_path"].rsplit("/", 1)[1]: r for r in json.loads(proc.stdout)["items"]}

    assert set(reports) == {"b.jsonl", "c.jsonl"}  # a.jsonl is SUCCESS: not pending
    b, c = reports["b.jsonl"], reports["c.jsonl"]
    assert (b["status"], b["records"], b["bad_records"], b["verdict"]) == ("NEW", 2, 1, "quarantined")
    assert b["new_columns"] == {"colour": "string"} and b["errors"][0].startswith("line 2: ")
    assert (c["bad_records"], c["verdict"], c["error_type"]) == (2, "fails", "TooManyBadRecords")
    assert _ledger_and_catalog(rt) == before
    human = cli(icefloe_env, "validate", "val").stdout
    assert "b.jsonl" in human and "adds colour (string)" in human and "nothing committed" in human
    # A source a run could not list: said, not raised (the API answers 200 with it; the CLI exits 1).
    ingest(rt, "gone", "s3://no-such-bucket-here/in/", format="jsonl")
    result = validate(rt, ingestions.get(rt.db, "gone"))
    assert (result["items"], result["error_type"]) == ([], "SourceError") and "no-such-bucket-here" in result[
        "error_message"
    ]
    failed = cli(icefloe_env, "validate", "gone", expect=1)
    assert len(failed.stderr.strip().splitlines()) == 1 and "no-such-bucket-here" in failed.stderr


def test_the_cli_takes_the_policy_and_refuses_it_with_spark(bucket: str, icefloe_env: dict[str, str]) -> None:
    source = f"s3://{bucket}/in/"
    common = ["--source", source, "--format", "jsonl", "--no-check", "--json"]
    made = cli(icefloe_env, "ingestion", "create", "p", "--table", "it.p", *common, "--on-bad-record", "quarantine")
    assert json.loads(made.stdout)["on_bad_record"] == "quarantine"
    changed = cli(icefloe_env, "ingestion", "update", "p", "--max-bad-records", "5%", "--json")
    assert json.loads(changed.stdout)["max_bad_records"] == "5%"
    spark = cli(
        icefloe_env, "ingestion", "create", "s", "--table", "it.s", *common, "--engine", "spark",
        "--on-bad-record", "skip", expect=2,
    )  # fmt: skip
    assert "spark engine does not support --on-bad-record skip" in spark.stderr
    assert len(spark.stderr.strip().splitlines()) == 1


def test_a_changed_file_replaces_its_quarantined_records_with_its_rows(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"in/a.jsonl": b'{"id": 1}\n{old broken\n'})
    ingest(rt, "chg", f"s3://{bucket}/in/", format="jsonl", on_bad_record="quarantine")
    assert run(rt, "chg").status == "SUCCESS"
    put_objects(bucket, {"in/a.jsonl": b'{"id": 2}\n{"id": 3}\n{new broken\n'})

    assert run(rt, "chg").status == "SUCCESS"

    assert sorted(load_table(rt, "it.chg").scan().to_arrow().column("id").to_pylist()) == [2, 3]
    quarantined = load_table(rt, "it.chg__quarantine").scan().to_arrow()
    assert [(r["_row_number"], r["_raw"]) for r in quarantined.to_pylist()] == [(3, "{new broken")]
