"""The CLI at the edge: what it shows of secrets, which names and URLs it refuses, which
ingestions it refuses to let overlap."""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.support.cli import cli, create, one_json, stderr_lines

if TYPE_CHECKING:
    from tests.support.services import PutObjects


def test_credentials_in_uris_are_never_printed(icefloe_env: dict[str, str]) -> None:
    env = icefloe_env
    created = cli(
        env,
        "ingestion",
        "create",
        "secretive",
        "--source",
        "s3://AKIAUSER:pa55word@bucket/p/",
        "--format",
        "jsonl",
        "--table",
        "e2e.secretive",
    )
    updated = cli(
        env, "ingestion", "update", "secretive", "--spark-remote", "sc://spark:15002/;user_id=etl;token=s3cr3t"
    )
    shown = [
        created.stdout,
        updated.stdout,
        cli(env, "ingestion", "show", "secretive").stdout,
        cli(env, "ingestion", "list").stdout,
        cli(env, "ingestion", "list", "--json").stdout,
        cli(env, "ingestion", "show", "secretive", "--json").stdout,
        cli(env, "ingestion", "update", "secretive", "--max-retries", "4", "--json").stdout,
    ]
    for text in shown:
        assert "pa55word" not in text and "AKIAUSER" not in text and "s3cr3t" not in text, text
    detail = one_json(shown[5])
    assert detail["source"] == "s3://***@bucket/p/"
    assert detail["spark_remote"] == "sc://spark:15002/;user_id=etl;token=***"
    [listed] = one_json(shown[4])
    assert (listed["source"], listed["spark_remote"]) == (detail["source"], detail["spark_remote"])


def _refused(env: dict[str, str], *args: str) -> str:
    proc = cli(env, *args, expect=2)
    [line] = stderr_lines(proc)
    return line


def test_names_are_checked_at_the_edge(icefloe_env: dict[str, str]) -> None:
    base = ["--source", "s3://bucket/names/", "--format", "jsonl"]
    digits = _refused(icefloe_env, "ingestion", "create", "2024", *base, "--table", "e2e.digits")
    assert "all digits" in digits
    bidi = _refused(icefloe_env, "ingestion", "create", "report\u202egpj", *base, "--table", "e2e.bidi")
    assert "U+202E" in bidi and "\u202e" not in bidi.replace("'report\u202egpj'", "")
    for table, why in (("e2e. spaced", "blanks"), ("e2e..x", "empty part"), ("e2e.a/b", "path")):
        line = _refused(icefloe_env, "ingestion", "create", "fine", *base, "--table", table)
        assert why in line and line.startswith("error: table "), line


@pytest.mark.parametrize("url", ["mysql://etl:hunter2@db.example/ledger", "sqlite:///tmp/x.db"])
@pytest.mark.parametrize("command", [["ingestion", "list"], ["run", "x", "--json"], ["worker"]])
def test_a_database_url_that_is_not_postgresql_is_a_configuration_error(
    icefloe_env: dict[str, str], url: str, command: list[str]
) -> None:
    line = _refused(icefloe_env | {"ICEFLOE_DATABASE_URL": url}, *command)
    scheme = url.partition(":")[0]
    assert line == (
        "error: ICEFLOE_DATABASE_URL must be a PostgreSQL URL (postgresql://host/db or postgresql+psycopg://…), "
        f"got a {scheme}:// URL"
    )


def test_overlapping_ingestions_of_one_table_are_refused(icefloe_env: dict[str, str], bucket: str) -> None:
    env = icefloe_env
    common = ["--format", "jsonl", "--table", "e2e.shared"]
    cli(env, "ingestion", "create", "all", "--source", f"s3://{bucket}/events/", *common, "--pattern", "*.jsonl")
    line = _refused(env, "ingestion", "create", "eu", "--source", f"s3://{bucket}/events/", *common)
    assert line == (
        f"error: ingestion 'all' already writes table e2e.shared from s3://{bucket}/events/ (pattern '*.jsonl'), "
        "which overlaps this source: a file matched by both would be ingested twice; use disjoint prefixes or "
        "patterns, or another table"
    )
    # A sub-prefix is fine while the first one's pattern stays in its own folder...
    cli(env, "ingestion", "create", "eu", "--source", f"s3://{bucket}/events/eu/", *common)
    # ...and the first one cannot be widened over it.
    assert "'eu' already writes table e2e.shared" in _refused(env, "ingestion", "update", "all", "--pattern", "**")


def test_deleting_an_ingestion_during_its_run_ends_the_run_with_one_line(
    icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects, database_url: str
) -> None:
    put_objects(bucket, {f"in/{n:03d}.jsonl": b'{"id": %d}\n' % n for n in range(40)})
    create(icefloe_env, "doomed", f"s3://{bucket}/in/", "--max-files-per-commit", "5")
    # The run pauses in discovery once the listing is in the ledger: the delete lands under it.
    env = icefloe_env | {"ICEFLOE_FAULT_POINT": "during-discovery:sleep=20"}
    running = subprocess.Popen(
        ["icefloe", "run", "doomed", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        engine = sa.create_engine(database_url, poolclass=NullPool)
        deadline = time.monotonic() + 120
        with engine.connect() as conn:
            while conn.execute(sa.text("SELECT count(*) FROM files")).scalar_one() < 40:
                assert running.poll() is None and time.monotonic() < deadline, running.communicate()
                time.sleep(0.1)
        engine.dispose()
        cli(icefloe_env, "ingestion", "delete", "doomed", "--yes")
        out, err = running.communicate(timeout=300)
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode == 1, (out, err)
    summary = one_json(out)
    assert summary["status"] == "FAILED" and summary["ingestion"] == "doomed", summary
    assert summary["error_message"] == (
        f"the ingestion was deleted while run {summary['run_id']} ran: its ledger is gone "
        "(what the run committed before stays in the table)"
    )
    assert "Traceback" not in err and "AssertionError" not in err, err
    [logged] = [line for line in err.splitlines() if "failed" in line]
    assert summary["error_message"] in logged
    assert cli(icefloe_env, "ingestion", "show", "doomed", expect=2).stderr.count("\n") == 1
