"""Incremental listing against real SeaweedFS and PostgreSQL: the watermark, LIST calls counted,
late keys missed and then found by a full reconciling listing, and the partition lookback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from icefloe import alerts, ingestions, metrics, worker
from icefloe.runtime import Runtime
from tests.support.inprocess import files, ingest, run
from tests.support.tables import jsonl, rows

if TYPE_CHECKING:
    from tests.support.services import PutObjects

DAY = 86400


@pytest.fixture
def list_calls(rt: Runtime) -> Iterator[list[dict[str, Any]]]:
    """The ListObjectsV2 requests the runtime's S3 client sends, as botocore sees them."""
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(dict(params))

    rt.s3.meta.events.register("provide-client-params.s3.ListObjectsV2", record)
    yield calls
    rt.s3.meta.events.unregister("provide-client-params.s3.ListObjectsV2", record)


def counter(name: str, ingestion: str) -> float:
    return metrics.REGISTRY.get_sample_value(f"{name}_total", {"ingestion": ingestion}) or 0.0


def full_run(rt: Runtime, name: str) -> Any:
    """``icefloe run NAME --full-listing``."""
    return worker.run_ingestion(rt, ingestions.get(rt.db, name), trigger="test", full_listing=True)


def test_late_key_below_the_watermark_is_missed_then_found_and_counted_by_a_full_listing(
    rt: Runtime, bucket: str, put_objects: PutObjects, list_calls: list[dict[str, Any]]
) -> None:
    put_objects(bucket, {f"seq/{n:06d}.jsonl": jsonl([{"id": n}]) for n in range(1, 6)})
    ingest(rt, "inc", f"s3://{bucket}/seq/", listing="incremental")

    first = run(rt, "inc")  # no watermark yet: a full listing
    assert (first.status, first.listing, first.files_succeeded, first.list_requests) == ("SUCCESS", "full", 5, 1)

    # A producer writes one key late, below the watermark (000005), and one in order.
    put_objects(bucket, {"seq/000003a.jsonl": jsonl([{"id": 35}]), "seq/000006.jsonl": jsonl([{"id": 6}])})
    list_calls.clear()
    listed_before, missed_before = (
        counter(m, "inc") for m in ("icefloe_list_requests", "icefloe_files_missed_by_incremental")
    )
    second = run(rt, "inc")
    assert (second.listing, second.files_new, second.files_succeeded) == ("incremental", 1, 1)
    assert [c.get("StartAfter") for c in list_calls] == ["seq/000005.jsonl"]
    assert second.list_requests == len(list_calls) == 1
    assert f"s3://{bucket}/seq/000003a.jsonl" not in files(rt, "inc")  # missed

    third = full_run(rt, "inc")
    assert (third.status, third.listing, third.files_new, third.files_succeeded) == ("SUCCESS", "full", 1, 1)
    assert third.files_missed_by_incremental == 1
    assert counter("icefloe_list_requests", "inc") == listed_before + 2
    assert counter("icefloe_files_missed_by_incremental", "inc") == missed_before + 1
    assert sorted(rows(rt, "it.inc").column("id").to_pylist()) == [1, 2, 3, 4, 5, 6, 35]

    assert alerts.detect(rt.db) == 1
    (alert,) = alerts.list_recent(rt.db)
    assert alert["kind"] == "listing_missed_files"
    assert "found 1 file(s) its incremental listing missed" in alert["subject"]


def test_steady_state_incremental_run_makes_at_most_two_list_calls(
    rt: Runtime, bucket: str, put_objects: PutObjects, list_calls: list[dict[str, Any]]
) -> None:
    put_objects(bucket, {f"s/{n:05d}.jsonl": jsonl([{"id": n}]) for n in range(2100)})  # 3 LIST pages
    ingest(rt, "full", f"s3://{bucket}/s/")
    ingest(rt, "inc", f"s3://{bucket}/s/", listing="incremental")
    for name in ("full", "inc"):
        assert run(rt, name).files_succeeded == 2100

    list_calls.clear()
    steady = run(rt, "inc")
    assert (steady.files_discovered, steady.files_new, steady.listing) == (0, 0, "incremental")
    assert steady.list_requests == len(list_calls) <= 2
    list_calls.clear()
    assert run(rt, "full").list_requests == len(list_calls) == 3  # the full listing re-lists every page


def test_full_listing_every_makes_a_reconciling_listing_when_due(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    put_objects(bucket, {"d/b.jsonl": jsonl([{"id": 2}])})
    ingest(rt, "inc", f"s3://{bucket}/d/", listing="incremental", full_listing_every_seconds=DAY)
    assert run(rt, "inc").listing == "full"
    put_objects(bucket, {"d/a.jsonl": jsonl([{"id": 1}])})
    assert run(rt, "inc").listing == "incremental"
    with rt.db.begin() as conn:  # a day passes since the last full listing
        conn.execute(sa.text("UPDATE listing_watermarks SET last_full_listing_at = now() - interval '25 hours'"))
    due = run(rt, "inc")
    assert (due.listing, due.files_missed_by_incremental, due.files_succeeded) == ("full", 1, 1)
    assert run(rt, "inc").listing == "incremental"  # the next one is due a day later


def test_changing_the_pattern_forgets_the_watermark(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {"d/a.csv": b"id\n1\n", "d/b.jsonl": jsonl([{"id": 2}])})
    ingest(rt, "inc", f"s3://{bucket}/d/", listing="incremental", pattern="*.jsonl")
    assert run(rt, "inc").files_succeeded == 1
    ingestions.update(rt.db, "inc", {"pattern": "*.{jsonl,csv}"})
    after = run(rt, "inc")
    # a.csv sorts below the watermark (b.jsonl) and now matches: the run lists everything again
    assert (after.listing, after.files_new, after.files_missed_by_incremental) == ("full", 1, 0)


def test_lookback_relists_unordered_names_in_the_newest_dt_partitions(
    rt: Runtime, bucket: str, put_objects: PutObjects, list_calls: list[dict[str, Any]]
) -> None:
    def key(day: str, name: str | None = None) -> str:
        return f"ev/dt=2025-01-{day}/{name or uuid.uuid4().hex}.jsonl"

    put_objects(bucket, {key(d): jsonl([{"id": f"{d}-{n}"}]) for d in ("01", "02", "03") for n in range(3)})
    ingest(rt, "plain", f"s3://{bucket}/ev/", listing="incremental")
    ingest(rt, "lookback", f"s3://{bucket}/ev/", listing="incremental", relist_lookback_seconds=DAY)
    for name in ("plain", "lookback"):
        assert run(rt, name).files_succeeded == 9

    # UUID names arrive late, smaller than the watermark, in today's, yesterday's and an older partition.
    late = {d: key(d, "0" * 32) for d in ("01", "02", "03")}
    put_objects(bucket, {k: jsonl([{"id": f"late-{d}"}]) for d, k in late.items()})

    list_calls.clear()
    relisted = run(rt, "lookback")
    assert [c.get("StartAfter") for c in list_calls] == ["ev/dt=2025-01-02/"]  # yesterday and today only
    assert (relisted.listing, relisted.files_new, relisted.list_requests) == ("incremental", 2, 1)
    found = files(rt, "lookback")
    assert {f"s3://{bucket}/{late['02']}", f"s3://{bucket}/{late['03']}"} <= set(found)
    assert f"s3://{bucket}/{late['01']}" not in found  # older than the lookback: skipped
    assert run(rt, "plain").files_new == 0  # the plain watermark misses all three

    reconciled = full_run(rt, "lookback")
    assert (reconciled.files_new, reconciled.files_missed_by_incremental) == (1, 1)
    assert full_run(rt, "plain").files_missed_by_incremental == 3
    assert sorted(rows(rt, "it.lookback").column("id").to_pylist()) == sorted(
        [f"{d}-{n}" for d in ("01", "02", "03") for n in range(3)] + ["late-01", "late-02", "late-03"]
    )
