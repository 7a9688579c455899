"""1,500 files under one prefix: listed through several pages, committed in few snapshots, exactly once."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from pyiceberg.types import StringType, TimestamptzType

from icefloe.runtime import Runtime
from tests.support.inprocess import ingest, run
from tests.support.tables import icefloe_snapshots, jsonl, load_table

if TYPE_CHECKING:
    from tests.support.services import PutObjects

N_FILES = 1500
ROWS_PER_FILE = 3


def test_1500_files_two_snapshots_exact_ids_and_nothing_on_the_second_run(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    seeded: dict[str, list[int]] = {}
    objects: dict[str, bytes] = {}
    for f in range(N_FILES):
        key = f"events/dt=2025-01-{f % 3 + 1:02d}/part-{f:05d}.jsonl"
        ids = [f * ROWS_PER_FILE + r for r in range(ROWS_PER_FILE)]
        seeded[f"s3://{bucket}/{key}"] = ids
        objects[key] = jsonl([{"id": i, "name": f"n{i}"} for i in ids])
    assert put_objects(bucket, objects) == N_FILES
    started = dt.datetime.now(dt.UTC)

    ingest(rt, "many", f"s3://{bucket}/events/")
    first = run(rt, "many")

    assert first.status == "SUCCESS", first.error_message
    assert first.files_discovered == N_FILES
    assert first.files_new == N_FILES
    assert first.files_succeeded == N_FILES
    assert first.files_failed == 0
    assert first.records_ingested == N_FILES * ROWS_PER_FILE
    assert first.bytes_read == sum(len(b) for b in objects.values())
    # max_files_per_commit defaults to 1,000: two batches, one append snapshot each
    assert first.snapshots_committed == 2

    table = load_table(rt, "it.many")
    summaries = icefloe_snapshots(table)
    assert len(summaries) == 2
    for props in summaries:
        assert props.get("icefloe.run-id") == str(first.id)
        assert props.get("icefloe.batch-id")
    assert sorted(int(p["icefloe.file-count"]) for p in summaries) == [500, 1000]
    assert len({p["icefloe.batch-id"] for p in summaries}) == 2

    data = table.scan().to_arrow()
    ids = data.column("id").to_pylist()
    assert len(ids) == N_FILES * ROWS_PER_FILE  # nothing twice
    assert set(ids) == {i for v in seeded.values() for i in v}  # nothing lost

    # every row names its file and when it was ingested
    schema = table.schema()
    assert isinstance(schema.find_field("_source_file").field_type, StringType)
    assert isinstance(schema.find_field("_ingested_at").field_type, TimestamptzType)
    by_id = dict(zip(ids, data.column("_source_file").to_pylist(), strict=True))
    assert {i: by_id[i] for v in seeded.values() for i in v} == {i: uri for uri, v in seeded.items() for i in v}
    ingested_at = data.column("_ingested_at").to_pylist()
    assert None not in ingested_at
    assert min(ingested_at) >= started - dt.timedelta(seconds=5)
    assert max(ingested_at) <= dt.datetime.now(dt.UTC)

    # the second run finds everything known: nothing read, no snapshot
    second = run(rt, "many")
    assert second.status == "SUCCESS", second.error_message
    assert second.files_discovered == N_FILES
    assert (second.files_new, second.files_changed, second.files_succeeded) == (0, 0, 0)
    assert second.records_ingested == 0
    assert second.snapshots_committed == 0
    assert len(load_table(rt, "it.many").metadata.snapshots) == 2
