"""Log records about a batch carry run_id, batch_id and ingestion, the commit protocol's included."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from icefloe import logs
from icefloe.runtime import Runtime
from tests.support.inprocess import ingest, run
from tests.support.tables import icefloe_snapshots, load_table

if TYPE_CHECKING:
    from tests.support.services import PutObjects


class _Collect(logging.Handler):
    """A handler as ``icefloe.logs.configure`` installs it: with the run-context filter."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.RunContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[list[logging.LogRecord]]:
    handler = _Collect()
    root, icefloe = logging.getLogger(), logging.getLogger("icefloe")
    root.addHandler(handler)
    level = icefloe.level
    icefloe.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        icefloe.setLevel(level)
        root.removeHandler(handler)


def test_commit_and_file_lines_carry_the_run_and_batch(
    rt: Runtime, bucket: str, put_objects: PutObjects, collected: list[logging.LogRecord]
) -> None:
    put_objects(bucket, {"in/a.jsonl": b'{"id": 1}\n', "in/b.jsonl": b"{not json\n"})
    ingest(rt, "ctx", f"s3://{bucket}/in/")
    finished = run(rt, "ctx")
    (snapshot,) = icefloe_snapshots(load_table(rt, "it.ctx"))

    def about(logger: str, start: str) -> dict[str, object]:
        record = next(r for r in collected if r.name == logger and r.getMessage().startswith(start))
        return {k: getattr(record, k, None) for k in ("run_id", "batch_id", "ingestion")}

    committed = about("icefloe.commit", "committed 1 file(s)")
    assert committed == {"run_id": finished.id, "batch_id": snapshot["icefloe.batch-id"], "ingestion": "ctx"}
    assert about("icefloe.engines.arrow", "file failed") == committed
