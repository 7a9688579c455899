"""Incremental listing through the CLI: `--listing incremental`, what `ingestion show` and `runs`
report, and `icefloe run NAME --full-listing` finding the file the incremental listing missed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tests.support.cli import cli, create, one_json, run_json

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def test_full_listing_finds_and_counts_what_the_incremental_listing_missed(
    icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects
) -> None:
    env = icefloe_env
    put_objects(bucket, {f"logs/2025-01-0{d}.jsonl": json.dumps({"id": d}).encode() + b"\n" for d in (1, 2, 4)})
    create(env, "logs", f"s3://{bucket}/logs/", "--listing", "incremental", "--full-listing-every", "7d")

    shown = one_json(cli(env, "ingestion", "show", "logs", "--json").stdout)
    assert (shown["listing"], shown["full_listing_every_seconds"], shown["relist_lookback_seconds"]) == (
        "incremental",
        7 * 86400,
        None,
    )
    first = run_json(env, "logs")
    assert (first["listing"], first["files_succeeded"], first["list_requests"]) == ("full", 3, 1)
    shown = one_json(cli(env, "ingestion", "show", "logs", "--json").stdout)
    assert shown["listing_watermark"] == "logs/2025-01-04.jsonl" and shown["last_full_listing_at"]

    put_objects(bucket, {"logs/2025-01-03.jsonl": b'{"id": 3}\n'})  # late, below the watermark
    steady = run_json(env, "logs")
    assert (steady["listing"], steady["files_new"], steady["list_requests"]) == ("incremental", 0, 1)
    assert steady["files_missed_by_incremental"] == 0

    full = one_json(cli(env, "run", "logs", "--full-listing", "--json").stdout)
    assert (full["status"], full["listing"], full["files_new"], full["files_succeeded"]) == ("SUCCESS", "full", 1, 1)
    assert full["files_missed_by_incremental"] == 1

    history = one_json(cli(env, "runs", "logs", "--json").stdout)
    assert [(r["listing"], r["list_requests"], r["files_missed_by_incremental"]) for r in history] == [
        ("full", 1, 1),
        ("incremental", 1, 0),
        ("full", 1, 0),
    ]
    updated = one_json(cli(env, "ingestion", "update", "logs", "--relist-lookback", "2d", "--json").stdout)
    assert updated["relist_lookback_seconds"] == 2 * 86400
    bad = cli(env, "ingestion", "update", "logs", "--listing", "sometimes", expect=2)
    assert bad.stderr.strip().splitlines()[-1].endswith("listing must be one of full, incremental, got 'sometimes'")
