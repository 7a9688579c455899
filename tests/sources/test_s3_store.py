"""The S3 store against SeaweedFS: copy and delete (what the source clean-up needs), and listing."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from icefloe.runtime import Runtime
from icefloe.s3 import make_client
from icefloe.settings import S3Settings, Settings
from icefloe.stores import parse_source

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def test_s3_copy_and_delete(icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {"in/a.jsonl": b'{"id": 1}\n'})
    rt = Runtime.open(Settings.from_env(icefloe_env), migrate=False)
    try:
        store = rt.store(parse_source(f"s3://{bucket}/in/"))
        a, moved = f"s3://{bucket}/in/a.jsonl", f"s3://{bucket}/done/a.jsonl"
        store.copy(a, moved)
        version = store.current_version(moved)
        assert version is not None and store.read(moved, version) == b'{"id": 1}\n'
        store.delete(a)
        assert store.current_version(a) is None
        store.delete(a)  # gone already: fine
    finally:
        rt.close()


def test_icefloes_listing_client_lists_as_the_stock_sdk_does(
    icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects, s3_client: Any
) -> None:
    """icefloe parses ListObjectsV2 itself (icefloe.s3_listing): page for page, a real listing of
    keys that need URL-encoding comes out as boto3's own does, continuation tokens included."""
    keys = ["in/tab\there.jsonl", "in/sp ace+plus%41.jsonl", "in/ü/ñ.csv", "in/a&b<c>.jsonl", "in/dt=2025-01-01/x"]
    put_objects(bucket, {k: b"x" * i for i, k in enumerate(keys)})
    ours = make_client(S3Settings.from_env(icefloe_env))

    def pages(client: Any, **extra: Any) -> list[dict[str, Any]]:
        found = []
        for p in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="in/", PaginationConfig={"PageSize": 2}, **extra
        ):
            found.append({k: v for k, v in p.items() if k != "ResponseMetadata"})
        return found

    listed = pages(ours)
    assert listed == pages(s3_client)
    assert sorted(o["Key"] for p in listed for o in p["Contents"]) == sorted(keys)
    assert len(listed) == 3 and all(isinstance(o["LastModified"], dt.datetime) for p in listed for o in p["Contents"])
    assert pages(ours, StartAfter="in/sp") == pages(s3_client, StartAfter="in/sp")
