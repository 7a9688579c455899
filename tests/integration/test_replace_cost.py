"""Replacing one changed source file costs about that file, not the batch it was loaded with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from icefloe import maintenance
from icefloe.engines.arrow import OWN_DATA_FILE_BYTES
from icefloe.runtime import Runtime
from tests.support.inprocess import ingest, run
from tests.support.tables import ids_by_file, load_table, rows

if TYPE_CHECKING:
    from tests.support.services import PutObjects

FILES, ROWS = 12, 25_000


def _csv(first_id: int) -> bytes:
    lines = ["id,name"] + [
        f"{i},customer-{i:012d}-abcdefghijklmnopqrstuvwxyz" for i in range(first_id, first_id + ROWS)
    ]
    return ("\n".join(lines) + "\n").encode()


def _summaries_since(rt: Runtime, n: int) -> list[dict[str, str]]:
    snaps = load_table(rt, "it.rep").metadata.snapshots[n:]
    return [dict(s.summary.additional_properties) for s in snaps if s.summary is not None]


def test_replacing_one_file_rewrites_no_other_rows(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    bodies = {f"in/f{n:02d}.csv": _csv(n * ROWS) for n in range(FILES)}
    assert all(len(b) >= OWN_DATA_FILE_BYTES for b in bodies.values())
    put_objects(bucket, bodies)
    ingest(rt, "rep", f"s3://{bucket}/in/", format="csv")
    assert run(rt, "rep").status == "SUCCESS"
    assert maintenance.table_health(load_table(rt, "it.rep"))["data_files"] == FILES  # one per source file
    before = len(load_table(rt, "it.rep").metadata.snapshots)

    put_objects(bucket, {"in/f05.csv": _csv(10_000_000)})
    assert run(rt, "rep").status == "SUCCESS"

    changes = _summaries_since(rt, before)
    deleted = sum(int(s.get("deleted-records", 0)) for s in changes)
    added = sum(int(s.get("added-records", 0)) for s in changes)
    assert deleted == ROWS  # only the old version's rows
    assert added - ROWS <= ROWS // 100  # rows rewritten by copy-on-write: about none (was 275,000)
    by_file = ids_by_file(rows(rt, "it.rep"))
    assert by_file[f"s3://{bucket}/in/f05.csv"] == list(range(10_000_000, 10_000_000 + ROWS))
    assert sum(len(v) for v in by_file.values()) == FILES * ROWS


def test_compaction_keeps_recent_one_source_files_so_a_replace_stays_cheap(
    rt: Runtime, bucket: str, put_objects: PutObjects
) -> None:
    files = 4
    put_objects(bucket, {f"in/f{n:02d}.csv": _csv(n * ROWS) for n in range(files)})
    put_objects(bucket, {f"in/tiny{n}.csv": f"id,name\n{90_000_000 + n},t\n".encode() for n in range(3)})
    ingest(rt, "rep", f"s3://{bucket}/in/", format="csv")
    assert run(rt, "rep").status == "SUCCESS"
    assert maintenance.table_health(load_table(rt, "it.rep"))["data_files"] == files + 1  # + the 3 tiny packed

    report = maintenance.maintain(rt.db, rt.catalog, "it.rep", lease_seconds=rt.settings.lease_seconds)
    assert report["compaction"]["held_back"] == files  # inside the replace window: left alone
    before = len(load_table(rt, "it.rep").metadata.snapshots)
    put_objects(bucket, {"in/f01.csv": _csv(10_000_000)})
    assert run(rt, "rep").status == "SUCCESS"
    changes = _summaries_since(rt, before)
    assert sum(int(s.get("deleted-records", 0)) for s in changes) == ROWS
    assert sum(int(s.get("added-records", 0)) for s in changes) == ROWS  # nothing else rewritten

    # Past the window (0 here) they are compacted like any small file; the rows stay exact.
    report = maintenance.maintain(
        rt.db, rt.catalog, "it.rep", lease_seconds=rt.settings.lease_seconds, replace_window_seconds=0
    )
    assert report["compaction"]["held_back"] == 0 and report["compaction"]["files_rewritten"] == files + 1
    assert maintenance.table_health(load_table(rt, "it.rep"))["data_files"] == 1
    by_file = ids_by_file(rows(rt, "it.rep"))
    assert by_file[f"s3://{bucket}/in/f01.csv"] == list(range(10_000_000, 10_000_000 + ROWS))
    assert sum(len(v) for v in by_file.values()) == files * ROWS + 3
