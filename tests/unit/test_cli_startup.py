"""The CLI starts without the heavy libraries: `icefloe --help`, `icefloe status` and the other
commands that only read the ledger do not pay for pyarrow, pyiceberg and boto3 (~0.5 s), nor a
parser child for pyiceberg."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pyarrow", "pyiceberg", "boto3", "botocore", "numpy", "obstore", "duckdb", "alembic")


def test_importing_the_cli_loads_none_of_the_heavy_libraries() -> None:
    probe = f"import sys, json, icefloe.cli; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [], "imported when the CLI starts; import them where they are used"


def test_a_parser_child_loads_pyarrow_but_not_the_table_libraries() -> None:
    # Each run starts one child per core; they parse bytes and need nothing of Iceberg or S3.
    probe = f"import sys, json, icefloe.isolation; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "pyarrow" in loaded
    # numpy comes with pyarrow where it is installed (it is optional for pyarrow); nothing else may.
    assert set(loaded) - {"pyarrow", "numpy"} == set(), "the parser children import this; keep it lean"
