"""The S3 store's copy and delete (what the source clean-up needs), against SeaweedFS."""

from __future__ import annotations

from typing import TYPE_CHECKING

from icefloe.runtime import Runtime
from icefloe.settings import Settings
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
