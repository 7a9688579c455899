"""The benchmarks the README's Performance figures come from still run against the current code.

Each runs small, on its own SeaweedFS and PostgreSQL, as a user would run it: a harness that fails
on an API change (benchmarks/listing.py did once, unnoticed for days) is caught here, not when the
next figures are due. The figures themselves are not asserted: the machine sets them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def bench(script: str, *args: str, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEFLOE_", "AWS_", "PYICEBERG_"))}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_listing_benchmark_measures_no_op_runs_with_keys_only_in_the_ledger() -> None:
    out = bench("listing.py", "--sizes", "1000", "--ledger-extra", "1000", "--repeat", "1")
    rows = {
        (m["s3"], m["ledger"], m["mode"]): int(m["lists"])
        for m in re.finditer(
            r"^\| (?P<s3>[\d,]+) \| (?P<ledger>[\d,]+) \| (?P<mode>[^|]+?) \| (?P<lists>\d+) \|", out, re.M
        )
    }
    assert rows == {
        ("1,000", "1,000", "full"): 1,
        ("1,000", "1,000", "incremental"): 1,
        ("1,000", "1,000", "incremental --relist-lookback 2d"): 1,
        ("1,000", "2,000", "full"): 1,
        ("1,000", "2,000", "incremental"): 1,
    }, out


def test_scale_benchmark_loads_tiny_files_and_reads_the_table_back(tmp_path: Path) -> None:
    # Only icefloe: the reference loaders live outside this repository (shared/bench).
    bench(
        "scale.py",
        *("--sizes", "200", "--loaders", "icefloe"),
        *("--plot", str(tmp_path / "scale.png"), "--results-dir", str(tmp_path)),
    )
    (report,) = tmp_path.glob("scale-*.json")
    results = json.loads(report.read_text())["results"]
    assert [(r["loader"], r["status"]) for r in results] == [("icefloe", "OK"), ("icefloe no-op", "OK")], results


def test_bookkeeping_benchmark_claims_and_commits_every_file() -> None:
    out = bench("bookkeeping.py", "--files", "3000", "--json")
    figures = json.loads(out.strip().splitlines()[-1])
    # The harness asserts itself that every file is claimed and committed once and that the
    # relisting finds nothing new; here, that it reports each figure.
    assert figures["files"] == 3000, figures
    assert {"discovery_seconds", "relisting_seconds", "claim_seconds", "commit_bookkeeping_seconds"} <= set(figures)


def test_discovery_modes_benchmark_finds_the_new_files_in_every_mode() -> None:
    out = bench("discovery_modes.py", "--files", "200", "--new", "20")
    new_files = re.findall(r"^\| `[^`]+` \| 20 new files \| \d+ \| \d+ \| (\d+) \|", out, re.M)
    assert new_files == ["20", "20", "20"], out
