"""`--format json`: files holding one JSON document (an array of objects, as vega's cars.json, or one
object), read streaming; the same file under `--format jsonl` fails with a hint at `--format json`."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from typing import TYPE_CHECKING

from icefloe.runtime import Runtime
from tests.support.inprocess import files, ingest, run
from tests.support.tables import rows

if TYPE_CHECKING:
    from tests.support.services import PutObjects

CARS = [
    {"Name": "chevrolet chevelle malibu", "Miles_per_Gallon": 18, "Cylinders": 8, "Origin": "USA"},
    {"Name": "buick skylark 320", "Miles_per_Gallon": 15, "Cylinders": 8, "Origin": "USA"},
    {"Name": 'toyota "corona" [mark ii]', "Miles_per_Gallon": None, "Cylinders": 4, "Origin": "Japan"},
]


def test_arrays_of_objects_and_single_objects(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(
        bucket,
        {
            "in/cars.json": json.dumps(CARS, indent=2).encode(),  # pretty-printed, as vega ships it
            "in/more.json.gz": gzip.compress(json.dumps(CARS[:1]).encode()),
            "in/one.json": json.dumps({"Name": "one, {odd} name", "Cylinders": 6}).encode(),
            "in/empty.json": b"[]",
        },
    )
    ingest(rt, "cars", f"s3://{bucket}/in/", format="json")

    result = run(rt, "cars")

    assert result.status == "SUCCESS", result.error_message
    assert result.records_ingested == 5
    names = sorted(rows(rt, "it.cars").column("Name").to_pylist())
    assert names == sorted([c["Name"] for c in CARS] + [CARS[0]["Name"], "one, {odd} name"])  # type: ignore[index]
    assert files(rt, "cars")[f"s3://{bucket}/in/empty.json"]["records_ingested"] == 0


def test_the_same_file_as_json_lines_fails_with_a_hint(rt: Runtime, bucket: str, put_objects: PutObjects) -> None:
    put_objects(bucket, {"in/cars.json": json.dumps(CARS).encode()})
    ingest(rt, "cars_as_lines", f"s3://{bucket}/in/", format="jsonl")

    result = run(rt, "cars_as_lines")

    assert result.status == "PARTIAL"
    [failed] = files(rt, "cars_as_lines", status="FAILED").values()
    assert failed["error_type"] == "MalformedJSON"
    assert "--format json" in str(failed["error_message"])


def test_a_large_array_streams_within_the_memory_bound() -> None:
    """200 MB of one JSON array read through the format reader: memory stays far below the file's size."""
    code = """
import io, sys
from icefloe.formats import ReadOptions, record_batches

class Array(io.RawIOBase):
    # '[' + 1.6 M objects of ~125 bytes + ']', produced as it is read: nothing held but a chunk
    def __init__(self):
        self.left, self.first, self.pending = 1_600_000, True, b""
    def readable(self):
        return True
    def readinto(self, b):
        if not self.pending and self.left:
            n = min(4000, self.left)
            head = b"[" if self.first else b","
            self.first = False
            self.pending = head + b",".join(b'{"id": %d, "text": "%s"}' % (self.left - i, b"x" * 100) for i in range(n))
            self.left -= n
            if self.left == 0:
                self.pending += b"]"
        size = min(len(b), len(self.pending))
        b[:size], self.pending = self.pending[:size], self.pending[size:]
        return size

batches = record_batches(io.BufferedReader(Array(), 1 << 20), "big.json", ReadOptions(format="json"))
total = sum(batch.num_rows for batch in batches)
import pyarrow as pa
# VmHWM, not ru_maxrss: the latter keeps the high-water mark of the (large) pytest process forked us
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(total, hwm // 1024, pa.default_memory_pool().max_memory() >> 20)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    total, peak_rss_mib, arrow_peak_mib = map(int, proc.stdout.split())
    assert total == 1_600_000
    # The array is ~200 MB of text, ~300 MB as Arrow: the reader holds a few 4 MiB blocks of it.
    # (Peak RSS is looser: the allocator keeps freed pages; 76-292 MiB measured.)
    assert arrow_peak_mib < 64, arrow_peak_mib
    assert peak_rss_mib < 400, peak_rss_mib
