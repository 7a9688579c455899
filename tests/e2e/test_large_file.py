"""A 200 MB CSV file is streamed: `icefloe run` stays within a memory bound far below what holding
the file (and its Arrow form) would need, and every row arrives once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from tests.support.cli import RUN_FIELDS, create
from tests.support.processes import tree_rss

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FILE_BYTES = 200 * 1024 * 1024
CHUNK_ROWS = 200_000
# Peak RSS allowed for the whole `icefloe run` process. The process alone (interpreter, pyarrow,
# pyiceberg, SQLAlchemy, boto3) peaks at ~230 MB on a one-row file. Streaming adds at most one
# data file's worth of Arrow data being written (write.target-file-size-bytes = 128 MB) and one being
# filled, plus 4 MB parse blocks: ~500 MB; the parser child that parses the stream (isolation.py)
# adds its interpreter and pyarrow (~75 MB) and its parse blocks: measured 672 MB for the process
# tree. Since a chunk's Parquet write overlaps parsing the next one (one write in flight, so one more
# 64 MiB chunk held): measured 763 MB. Holding the file's ~200 MB of rows at once (plus the copies
# made while converting and writing them) goes well past this bound.
MAX_PEAK_RSS = 850 * 1024 * 1024


def write_csv(path: Path) -> int:
    """Stream a CSV of at least FILE_BYTES to ``path`` in chunks; returns its number of rows."""
    schema = pa.schema([("id", pa.int64()), ("customer", pa.string()), ("amount", pa.float64())])
    rows = 0
    with pacsv.CSVWriter(str(path), schema) as writer:
        while path.stat().st_size < FILE_BYTES:
            ids = pa.array(range(rows, rows + CHUNK_ROWS), pa.int64())
            customer = pc.binary_join_element_wise("customer-", pc.cast(ids, pa.string()), "-eu-west", "")
            amount = pc.divide(pc.cast(ids, pa.float64()), 7.0)
            writer.write_table(pa.table([ids, customer, amount], schema=schema))
            rows += CHUNK_ROWS
    return rows


@pytest.mark.slow
def test_200mb_csv_is_streamed_within_a_memory_bound(
    icefloe_env: dict[str, str],
    catalog: SqlCatalog,
    bucket: str,
    s3_client: S3Client,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    path = tmp_path / "big.csv"
    n_rows = write_csv(path)
    size = path.stat().st_size
    assert size >= FILE_BYTES
    s3_client.upload_file(str(path), bucket, "big/orders.csv")
    path.unlink()
    create(icefloe_env, "big", f"s3://{bucket}/big/", fmt="csv")

    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        child = psutil.Popen(["icefloe", "run", "big", "--json"], env=icefloe_env, stdout=stdout, stderr=stderr)
        peak = 0
        deadline = time.monotonic() + 900
        while child.poll() is None:
            peak = max(peak, tree_rss(child))
            assert time.monotonic() < deadline, "icefloe run took more than 15 minutes"
            time.sleep(0.05)
    record_property("peak_rss_mb", round(peak / 2**20, 1))
    print(f"\npeak RSS of `icefloe run` on a {size / 2**20:.0f} MB CSV: {peak / 2**20:.0f} MB")

    assert child.returncode == 0, (child.returncode, out.read_text(), err.read_text())
    assert "Traceback" not in err.read_text()
    summary = json.loads(out.read_text())
    assert summary.keys() >= RUN_FIELDS
    assert summary["status"] == "SUCCESS"
    assert (summary["files_succeeded"], summary["files_failed"]) == (1, 0)
    assert summary["records_ingested"] == n_rows
    assert summary["bytes_read"] == size

    ids = catalog.load_table("e2e.big").scan(selected_fields=("id",)).to_arrow().column("id")
    assert len(ids) == n_rows
    assert pc.min_max(ids).as_py() == {"min": 0, "max": n_rows - 1}
    assert pc.count_distinct(ids).as_py() == n_rows

    # last, so that a failure here still shows the rows arrived right
    assert peak < MAX_PEAK_RSS, f"peak RSS {peak / 2**20:.0f} MB"
