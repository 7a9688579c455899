"""An ingestion's life through the CLI: create, run (twice), files, pause, resume, list, show, delete;
the table read back with pyiceberg."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.types import StringType, TimestamptzType

from tests.support.cli import cli, create, one_json, run_json, stderr_lines

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def test_ingestion_lifecycle(
    icefloe_env: dict[str, str], catalog: SqlCatalog, bucket: str, put_objects: PutObjects
) -> None:
    env = icefloe_env
    objects = {
        f"events/2025/01/{day:02d}/part-{n}.jsonl": "".join(
            json.dumps({"id": day * 100 + n * 10 + r, "kind": "click"}) + "\n" for r in range(5)
        ).encode()
        for day in (1, 2)
        for n in range(3)
    }
    objects["events/_SUCCESS"] = b""
    put_objects(bucket, objects)
    seeded_ids = sorted(json.loads(line)["id"] for b in objects.values() for line in b.splitlines())
    started = dt.datetime.now(dt.UTC)

    create(env, "events", f"s3://{bucket}/events/", "--pattern", "**/*.jsonl")
    create(env, "other", f"s3://{bucket}/other/", fmt="csv")

    first = run_json(env, "events")
    assert first["status"] == "SUCCESS"
    assert first["files_discovered"] == 6
    assert (first["files_new"], first["files_changed"], first["files_succeeded"]) == (6, 0, 6)
    assert (first["files_failed"], first["files_skipped"]) == (0, 0)
    assert first["records_ingested"] == 30
    assert first["bytes_read"] == sum(len(b) for k, b in objects.items() if k.endswith(".jsonl"))
    assert first["snapshots_committed"] == 1

    # the table, as a user reads it
    table = catalog.load_table("e2e.events")
    data = table.scan().to_arrow()
    assert sorted(data.column("id").to_pylist()) == seeded_ids
    assert isinstance(table.schema().find_field("_source_file").field_type, StringType)
    assert isinstance(table.schema().find_field("_ingested_at").field_type, TimestamptzType)
    sources = {
        i: s for i, s in zip(data.column("id").to_pylist(), data.column("_source_file").to_pylist(), strict=True)
    }
    for key, body in objects.items():
        for line in body.splitlines():
            assert sources[json.loads(line)["id"]] == f"s3://{bucket}/{key}"
    ingested_at = data.column("_ingested_at").to_pylist()
    assert all(started - dt.timedelta(seconds=5) <= t <= dt.datetime.now(dt.UTC) for t in ingested_at)
    [snapshot] = table.metadata.snapshots
    assert snapshot.summary is not None
    props = snapshot.summary.additional_properties
    assert props["icefloe.run-id"] == str(first["run_id"])
    assert props["icefloe.file-count"] == "6"
    assert props["icefloe.batch-id"]

    listed = one_json(cli(env, "files", "events", "--json").stdout)
    assert {f["file_path"] for f in listed} == {f"s3://{bucket}/{k}" for k in objects if k.endswith(".jsonl")}
    assert {f["status"] for f in listed} == {"SUCCESS"}
    assert sum(f["records_ingested"] for f in listed) == 30

    cli(env, "ingestion", "pause", "events")
    paused = cli(env, "run", "events", "--json", expect=2)
    [message] = stderr_lines(paused)
    assert "paused" in message and "events" in message
    assert paused.stdout.strip() == ""  # no run: no summary

    by_name = {i["name"]: i for i in one_json(cli(env, "ingestion", "list", "--json").stdout)}
    assert set(by_name) == {"events", "other"}
    assert (by_name["events"]["status"], by_name["other"]["status"]) == ("PAUSED", "ACTIVE")
    assert by_name["events"]["source"] == f"s3://{bucket}/events/"
    assert (by_name["events"]["format"], by_name["events"]["table"]) == ("jsonl", "e2e.events")
    assert by_name["events"]["pattern"] == "**/*.jsonl"

    cli(env, "ingestion", "resume", "events")
    second = run_json(env, "events")  # nothing new: nothing read, no snapshot
    assert second["status"] == "SUCCESS"
    assert second["run_id"] != first["run_id"]
    assert second["files_discovered"] == 6
    assert (second["files_new"], second["files_changed"], second["files_succeeded"]) == (0, 0, 0)
    assert (second["records_ingested"], second["snapshots_committed"]) == (0, 0)
    assert len(catalog.load_table("e2e.events").metadata.snapshots) == 1

    shown = one_json(cli(env, "ingestion", "show", "events", "--json").stdout)
    assert shown["status"] == "ACTIVE"
    assert shown["files"].get("SUCCESS") == 6
    assert shown["last_run"]["run_id"] == second["run_id"]

    cli(env, "ingestion", "delete", "other", "--yes")
    gone = cli(env, "ingestion", "show", "other", expect=2)
    [message] = stderr_lines(gone)
    assert "other" in message
