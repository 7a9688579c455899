"""Hostile input through the real processes: a file that crashes pyarrow's parser (JSON nested
100,000 deep: a segfault inside pyarrow's JSON reader) costs only that file, at the first crash,
under `icefloe run`, `icefloe worker` and `icefloe serve --with-worker` — the process survives. A
decompression bomb is read within the memory bound."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from tests.support.cli import cli, create, one_json, run_json
from tests.support.processes import tree_rss

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.support.services import PutObjects

CRASHER = ('{"id": 9, "x": ' + "[" * 100_000 + "1" + "]" * 100_000 + "}\n").encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def good(first: int) -> bytes:
    return "".join(json.dumps({"id": i}) + "\n" for i in range(first, first + 3)).encode()


def seed(put_objects: PutObjects, bucket: str) -> dict[str, list[int]]:
    put_objects(bucket, {"in/a.jsonl": good(0), "in/crash.jsonl": CRASHER, "in/z.jsonl": good(10)})
    return {f"s3://{bucket}/in/a.jsonl": [0, 1, 2], f"s3://{bucket}/in/z.jsonl": [10, 11, 12]}


def ids_by_file(catalog: SqlCatalog, table: str) -> dict[str, list[int]]:
    rows = catalog.load_table(table).scan(selected_fields=("id", "_source_file")).to_arrow().to_pylist()
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r["_source_file"], []).append(r["id"])
    return {k: sorted(v) for k, v in out.items()}


def assert_crash_cost_one_file(env: dict[str, str], catalog: SqlCatalog, bucket: str, name: str, good_ids: Any) -> None:
    ledger = {f["file_path"]: f for f in one_json(cli(env, "files", name, "--json").stdout)}
    crashed = ledger[f"s3://{bucket}/in/crash.jsonl"]
    assert (crashed["status"], crashed["error_type"], crashed["retry_count"]) == ("FAILED", "ParserCrashed", 1)
    assert f"s3://{bucket}/in/crash.jsonl" in crashed["error_message"] and "SIGSEGV" in crashed["error_message"]
    assert "\n" not in crashed["error_message"]
    for uri in good_ids:
        assert ledger[uri]["status"] == "SUCCESS", ledger[uri]
    assert ids_by_file(catalog, f"e2e.{name}") == good_ids


def test_a_parser_crash_fails_only_its_file_under_icefloe_run(
    icefloe_env: dict[str, str], catalog: SqlCatalog, bucket: str, put_objects: PutObjects
) -> None:
    good_ids = seed(put_objects, bucket)
    create(icefloe_env, "crash", f"s3://{bucket}/in/", "--max-retries", "1")  # no retry of the crasher

    summary = run_json(icefloe_env, "crash", expect=3)

    assert (summary["status"], summary["files_succeeded"], summary["files_failed"]) == ("PARTIAL", 2, 1)
    assert_crash_cost_one_file(icefloe_env, catalog, bucket, "crash", good_ids)
    # The table stays writable: a later file lands next to the others.
    put_objects(bucket, {"in/later.jsonl": good(20)})
    assert run_json(icefloe_env, "crash")["files_succeeded"] == 1
    assert ids_by_file(catalog, "e2e.crash")[f"s3://{bucket}/in/later.jsonl"] == [20, 21, 22]


def wait_for_run(env: dict[str, str], name: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the process died with exit code {proc.returncode}"
        [latest, *_] = one_json(cli(env, "runs", name, "--json").stdout)
        if latest["status"] not in ("PENDING", "RUNNING"):
            assert isinstance(latest, dict)
            return latest
        time.sleep(1)
    raise AssertionError("the queued run did not finish")


@pytest.fixture
def log_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "process.log"
    yield path


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_parser_crash_fails_only_its_file_and_the_daemon_lives_on(
    icefloe_env: dict[str, str],
    catalog: SqlCatalog,
    bucket: str,
    put_objects: PutObjects,
    log_path: Path,
    command: str,
) -> None:
    good_ids = seed(put_objects, bucket)
    create(icefloe_env, "daemon", f"s3://{bucket}/in/", "--max-retries", "1")
    port = free_port()
    args = (
        ["icefloe", "worker", "--poll-seconds", "0.2"]
        if command == "worker"
        else ["icefloe", "serve", "--host", "127.0.0.1", "--port", str(port), "--with-worker"]
    )
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, env=icefloe_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        cli(icefloe_env, "run", "daemon", "--enqueue", "--json")
        finished = wait_for_run(icefloe_env, "daemon", proc)

        assert (finished["status"], finished["files_succeeded"], finished["files_failed"]) == ("PARTIAL", 2, 1)
        assert_crash_cost_one_file(icefloe_env, catalog, bucket, "daemon", good_ids)
        assert proc.poll() is None, log_path.read_text()
        if command == "serve":
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        # It still works: the next queued run ingests a new file.
        put_objects(bucket, {"in/later.jsonl": good(20)})
        cli(icefloe_env, "run", "daemon", "--enqueue", "--json")
        assert wait_for_run(icefloe_env, "daemon", proc)["status"] == "SUCCESS"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()


# A 1 MB .jsonl.gz expanding to 400 MB. Routed by its compressed size and read whole (as before),
# it needed the 400 MB of text plus its Arrow form and copies (1.83 GB peak for one expanding to
# 1.5 GB); routed by what it expands to, it is streamed: the bound of test_large_file.py (600 MB
# for the worker process) plus one parser child (~75 MB, see icefloe.isolation). Measured: 604 MB.
BOMB_EXPANDED = 400 << 20
MAX_PEAK_RSS = 700 << 20


@pytest.mark.slow
def test_a_decompression_bomb_is_streamed_within_the_memory_bound(
    icefloe_env: dict[str, str], catalog: SqlCatalog, bucket: str, s3_client: S3Client, tmp_path: Path
) -> None:
    line = b'{"id": 1, "payload": "' + b"x" * 200 + b'"}\n'
    chunk = line * ((1 << 20) // len(line))
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    parts = [packer.compress(chunk) for _ in range(BOMB_EXPANDED // len(chunk))]
    body = b"".join([*parts, packer.flush()])
    rows = (BOMB_EXPANDED // len(chunk)) * (len(chunk) // len(line))
    assert len(body) < 4 << 20
    s3_client.put_object(Bucket=bucket, Key="bomb/a.jsonl.gz", Body=body)
    create(icefloe_env, "bomb", f"s3://{bucket}/bomb/")

    out = tmp_path / "stdout"
    with out.open("wb") as stdout:
        child = psutil.Popen(["icefloe", "run", "bomb", "--json"], env=icefloe_env, stdout=stdout)
        peak = 0
        deadline = time.monotonic() + 900
        while child.poll() is None:
            peak = max(peak, tree_rss(child))
            assert time.monotonic() < deadline
            time.sleep(0.05)
    print(f"\npeak RSS of `icefloe run` on a {len(body) >> 20} MB gzip expanding to 400 MB: {peak >> 20} MB")
    summary = one_json(out.read_text())
    assert child.returncode == 0, summary
    assert (summary["files_succeeded"], summary["records_ingested"]) == (1, rows)
    assert catalog.load_table("e2e.bomb").scan(selected_fields=("id",)).to_arrow().num_rows == rows
    assert peak < MAX_PEAK_RSS, f"peak RSS {peak >> 20} MB"


def test_csv_null_values_option_is_stored_and_shown(icefloe_env: dict[str, str], bucket: str) -> None:
    create(icefloe_env, "nulls", f"s3://{bucket}/in/", "--csv-null-values", ",NA,NULL", fmt="csv")
    shown = one_json(cli(icefloe_env, "ingestion", "show", "nulls", "--json").stdout)
    assert shown["csv_null_values"] == ["", "NA", "NULL"]
    create(icefloe_env, "plain", f"s3://{bucket}/in/", fmt="csv")
    assert one_json(cli(icefloe_env, "ingestion", "show", "plain", "--json").stdout)["csv_null_values"] is None
