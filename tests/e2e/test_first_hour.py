"""The first hour of a newcomer, through the real CLI: the demo, then looking at its table with
`icefloe sql` and `icefloe table show`, then reaching the same catalog from pyiceberg and DuckDB
with what `icefloe catalog connect` prints (the embedded services kept up by `icefloe services`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from icefloe import embedded
from tests.support.cli import cli, one_json

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def newcomer_env(icefloe_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A user with nothing configured: no ICEFLOE_DATABASE_URL (the embedded PostgreSQL), an
    ICEFLOE_HOME of their own. Not under pytest's tmp_path: see tests/conftest.py (embedded_pg_home)."""
    home = Path(tempfile.mkdtemp(prefix="icefloe-first-hour-"))
    env = {k: v for k, v in icefloe_env.items() if k != "ICEFLOE_DATABASE_URL"}
    env["ICEFLOE_HOME"] = str(home)
    try:
        yield env
    finally:
        cli(env, "services", "stop", expect=None)
        embedded.release_postgres(home)
        shutil.rmtree(home, ignore_errors=True)


def terminal(env: dict[str, str]) -> dict[str, str]:
    """The environment of an 80-column terminal (Rich draws its tables; FORCE_COLOR: a terminal)."""
    return env | {"COLUMNS": "80", "LINES": "50", "FORCE_COLOR": "1", "TERM": "xterm"}


def assert_fits_80_columns(text: str) -> None:
    wide = [line for line in ANSI.sub("", text).splitlines() if len(line) > 80]
    assert not wide, wide


def test_newcomer_demo_then_sql_table_show_and_other_engines(newcomer_env: dict[str, str], tmp_path: Path) -> None:
    env = newcomer_env
    [pg_port] = embedded.free_ports(1)
    started = cli(env, "services", "start", "--pg-port", str(pg_port), "--json")
    state = one_json(started.stdout)
    assert state["postgres"]["port"] == pg_port
    assert cli(env, "services", "status").returncode == 0

    demo = cli(env, "demo")
    assert "PARTIAL" in demo.stdout and "553 rows" in demo.stdout
    # the demo ends by saying what to type next, and where the data is
    assert 'icefloe sql "SELECT' in demo.stdout
    assert "icefloe files demo-events" in demo.stdout
    assert f"ICEFLOE_HOME={Path(env['ICEFLOE_HOME']).resolve()}" in demo.stdout
    assert "make demo" in demo.stdout

    counts = one_json(
        cli(env, "sql", "SELECT event_type, count(*) AS n FROM demo.events GROUP BY 1 ORDER BY 1", "--json").stdout
    )
    assert sum(row["n"] for row in counts) == 553
    assert [row["event_type"] for row in counts] == sorted(row["event_type"] for row in counts)
    [one] = one_json(cli(env, "sql", "SELECT * FROM demo.events WHERE id = 60", "--json").stdout)
    assert one["_source_file"] == "s3://landing/events/dt=2025-01-01/part-1.jsonl.gz"
    assert one["_ingested_at"].endswith("+00:00")

    refused = cli(env, "sql", "DELETE FROM demo.events", expect=2)
    assert refused.stderr.count("\n") == 1 and "read-only" in refused.stderr
    bad = cli(env, "sql", "SELECT nope FROM demo.events", expect=1)
    assert bad.stderr.count("\n") == 1 and "nope" in bad.stderr
    cli(env, "sql", "SELECT * FROM demo.missing", expect=2)

    shown = one_json(cli(env, "table", "show", "demo.events", "--json").stdout)
    assert shown["rows"] == 553
    assert shown["data_files"] >= 1 and shown["average_file_bytes"] > 0
    assert {c["name"] for c in shown["columns"] if c["added_by_icefloe"]} == {"_source_file", "_ingested_at"}
    assert [s["run_id"] for s in shown["snapshots"]] == [1, 2, 2]
    assert all(s["batch_id"] for s in shown["snapshots"])
    assert shown["location"].startswith("file://")
    human = cli(terminal(env), "table", "show", "demo.events")
    assert "_source_file" in human.stdout and "added by icefloe" in human.stdout
    assert_fits_80_columns(human.stdout)

    # relative keys, as the demo's closing note writes them
    history = one_json(cli(env, "files", "demo-events", "--history", "dt=2025-01-03/part-9.jsonl.gz", "--json").stdout)
    assert history and history[-1]["error_type"] == "CorruptFile"
    cli(env, "files", "demo-events", "--history", "dt=2025-01-03/nope.jsonl", expect=2)
    files = cli(terminal(env), "files", "demo-events")
    assert "dt=2025-01-03/part-9.jsonl.gz" in ANSI.sub("", files.stdout)
    assert_fits_80_columns(files.stdout)

    # pyiceberg, in another process, configured only by what `catalog connect` printed
    pyiceberg_home = tmp_path / "pyiceberg"
    pyiceberg_home.mkdir()
    config = cli(env, "catalog", "connect", "--format", "pyiceberg").stdout
    assert f"127.0.0.1:{pg_port}" in config
    (pyiceberg_home / ".pyiceberg.yaml").write_text(config)
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pyiceberg.catalog import load_catalog; "
            "print(load_catalog('icefloe').load_table('demo.events').scan().to_arrow().num_rows)",
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYICEBERG_", "ICEFLOE_"))}
        | {"PYICEBERG_HOME": str(pyiceberg_home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "553"

    # DuckDB, with the statements `catalog connect --format duckdb` printed
    statements = cli(env, "catalog", "connect", "--format", "duckdb").stdout
    con = duckdb.connect()
    try:
        con.execute(statements)
        assert con.execute("SELECT count(*) FROM demo.events").fetchone() == (553,)
    finally:
        con.close()

    cli(env, "services", "stop")
    assert cli(env, "services", "status", expect=3).stdout.startswith("no services")
