"""Which objects an ingestion takes: glob patterns below the prefix, --since, hidden/marker files."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import TYPE_CHECKING

import pytest

from icefloe.runtime import Runtime
from tests.support.cli import cli
from tests.support.inprocess import files, ingest, run
from tests.support.tables import jsonl, rows

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.support.services import PutObjects

PREFIX = "in/"
# keys below the prefix; each object holds one row whose id is the key itself
KEYS = [
    "a1.jsonl",
    "a2.jsonl",
    "ab.jsonl",
    "b1.jsonl",
    "x.json",
    "notes.txt",
    "2024/01/e1.jsonl",
    "2024/02/e2.jsonl",
    "2024/02/deep/e3.jsonl",
    "2025/01/e4.jsonl",
    "logs/l1.jsonl",
]
TOP_JSONL = {"a1.jsonl", "a2.jsonl", "ab.jsonl", "b1.jsonl"}
NESTED_JSONL = {"2024/01/e1.jsonl", "2024/02/e2.jsonl", "2024/02/deep/e3.jsonl", "2025/01/e4.jsonl"}


@pytest.fixture(scope="module")
def seeded(module_bucket: str, put_objects: PutObjects) -> str:
    objects = {PREFIX + k: jsonl([{"id": k}]) for k in KEYS}
    # outside the prefix: never listed
    objects["other/a1.jsonl"] = jsonl([{"id": "other"}])
    objects["in-not-below/a1.jsonl"] = jsonl([{"id": "sibling"}])
    put_objects(module_bucket, objects)
    return module_bucket


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (None, set(KEYS)),
        ("*.jsonl", TOP_JSONL),  # * stays within one segment
        ("**/*.jsonl", TOP_JSONL | NESTED_JSONL | {"logs/l1.jsonl"}),  # ** crosses segments, also none
        ("2024/**", {"2024/01/e1.jsonl", "2024/02/e2.jsonl", "2024/02/deep/e3.jsonl"}),
        ("a?.jsonl", {"a1.jsonl", "a2.jsonl", "ab.jsonl"}),
        ("[ab]1.jsonl", {"a1.jsonl", "b1.jsonl"}),
        ("[!a]*.jsonl", {"b1.jsonl"}),
        ("{2024/01,2025/01}/*.jsonl", {"2024/01/e1.jsonl", "2025/01/e4.jsonl"}),
        ("*.{jsonl,json}", TOP_JSONL | {"x.json"}),
        ("*/*/e?.jsonl", {"2024/01/e1.jsonl", "2024/02/e2.jsonl", "2025/01/e4.jsonl"}),
        ("nothing-*", set()),
    ],
)
def test_pattern_selects_exactly(rt: Runtime, seeded: str, pattern: str | None, expected: set[str]) -> None:
    ingest(rt, "sel", f"s3://{seeded}/{PREFIX}", pattern=pattern)
    result = run(rt, "sel")

    assert result.status == "SUCCESS", result.error_message
    expected_uris = {f"s3://{seeded}/{PREFIX}{k}" for k in expected}
    assert set(files(rt, "sel")) == expected_uris  # the ledger holds exactly the selected keys
    assert result.files_discovered == len(expected)
    assert result.files_succeeded == len(expected)
    if expected:
        table = rows(rt, "it.sel")
        assert sorted(table.column("id").to_pylist()) == sorted(expected)
        assert set(table.column("_source_file").to_pylist()) == expected_uris


def test_since_selects_objects_modified_at_or_after(
    rt: Runtime, icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects, s3_client: S3Client
) -> None:
    old = {f"logs/old-{i}.jsonl": jsonl([{"id": f"old-{i}"}]) for i in range(3)}
    put_objects(bucket, old)
    old_max = max(
        s3_client.head_object(Bucket=bucket, Key=k)["LastModified"] for k in old
    )  # S3 times have whole seconds: wait for the server's clock to pass them (no fixed sleep)
    for n in itertools.count():
        s3_client.put_object(Bucket=bucket, Key="logs/new-0.jsonl", Body=jsonl([{"id": "new-0"}]))
        if s3_client.head_object(Bucket=bucket, Key="logs/new-0.jsonl")["LastModified"] > old_max:
            break
        assert n < 100, "the S3 server's clock does not advance"
        time.sleep(0.05)
    put_objects(bucket, {f"logs/new-{i}.jsonl": jsonl([{"id": f"new-{i}"}]) for i in range(1, 4)})
    new = [f"logs/new-{i}.jsonl" for i in range(4)]
    since = min(s3_client.head_object(Bucket=bucket, Key=k)["LastModified"] for k in new)
    assert since > old_max

    # --since as a user gives it, in ISO-8601 with a Z, through the CLI
    since_text = since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cli(
        icefloe_env,
        "ingestion",
        "create",
        "recent",
        "--source",
        f"s3://{bucket}/logs/",
        "--format",
        "jsonl",
        "--table",
        "it.recent",
        "--since",
        since_text,
    )
    result = run(rt, "recent")

    assert result.status == "SUCCESS", result.error_message
    assert set(files(rt, "recent")) == {f"s3://{bucket}/{k}" for k in new}
    assert sorted(rows(rt, "it.recent").column("id").to_pylist()) == sorted(f"new-{i}" for i in range(4))


def test_hidden_and_marker_objects_are_skipped_not_read(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(
        bucket,
        {
            "out/part-0.jsonl": jsonl([{"id": 1}]),
            "out/_SUCCESS": b"",
            "out/.part-0.jsonl.crc": b"\x00\x01 not json",
            "out/_temporary/0/part-9.jsonl": b"not json either",
        },
    )
    ingest(rt, "spark", f"s3://{bucket}/out/")
    result = run(rt, "spark")

    assert result.status == "SUCCESS", result.error_message
    assert result.files_succeeded == 1
    assert result.files_failed == 0
    ledger = files(rt, "spark")
    assert ledger[f"s3://{bucket}/out/part-0.jsonl"]["status"] == "SUCCESS"
    for key in ("out/_SUCCESS", "out/.part-0.jsonl.crc", "out/_temporary/0/part-9.jsonl"):
        assert ledger[f"s3://{bucket}/{key}"]["status"] == "SKIPPED"
    assert rows(rt, "it.spark").column("id").to_pylist() == [1]
