"""`--schema-evolution approve` through the CLI, with two `icefloe worker` processes running:
held files are never committed before the approval, and once after it; a rejection fails them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy.pool import NullPool

from tests.support.cli import cli, create, one_json
from tests.support.ledger import TERMINAL, LedgerQueries
from tests.support.processes import Proc, Processes
from tests.support.tables import ids_by_file, jsonl
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from tests.support.services import PutObjects


@dataclass
class Workers(Processes, LedgerQueries):
    env: dict[str, str]
    tmp_path: Path
    db: sa.Engine
    procs: list[Proc] = field(default_factory=list)

    def run_and_wait(self, name: str) -> str:
        """Queue a run for the workers (`icefloe run --enqueue`) and wait until it finished."""
        queued = one_json(cli(self.env, "run", name, "--enqueue", "--json").stdout)
        run_id = int(queued["run_id"])
        return str(
            wait_for(
                lambda: (row := self.run_row(run_id)).status in TERMINAL and row.status,
                timeout=180,
                what=f"run {run_id} to finish",
                interval=0.3,
            )
        )

    def by_key(self) -> dict[str, Any]:
        return {f.file_path.rsplit("/", 1)[-1]: f for f in self.files()}


@pytest.fixture
def workers(icefloe_env: dict[str, str], tmp_path: Path, database_url: str) -> Iterator[Workers]:
    db = sa.create_engine(database_url, poolclass=NullPool)
    procs = Workers(icefloe_env, tmp_path, db)
    try:
        yield procs
    finally:
        procs.close_processes()
        db.dispose()


def test_approve_and_reject_through_the_cli_with_two_workers(
    icefloe_env: dict[str, str], bucket: str, put_objects: PutObjects, catalog: SqlCatalog, workers: Workers
) -> None:
    env = icefloe_env
    create(env, "gate", f"s3://{bucket}/in/", "--schema-evolution", "approve", "--max-files-per-commit", "1")
    put_objects(bucket, {"in/1.jsonl": jsonl([{"id": 1}])})
    started = [workers.start_worker(lease=10, name=f"worker{n}") for n in range(2)]
    for proc in started:
        workers.wait_started(proc)
    assert workers.run_and_wait("gate") == "SUCCESS"

    put_objects(
        bucket,
        {
            "in/2.jsonl": jsonl([{"id": 2, "email": "b@example.com"}]),
            "in/3.jsonl": jsonl([{"id": 3, "email": "c@example.com"}]),
            "in/4.jsonl": jsonl([{"id": 4}]),
            "in/5.jsonl": jsonl([{"id": 5}]),
        },
    )
    assert workers.run_and_wait("gate") == "SUCCESS"
    ledger = workers.by_key()
    assert {k for k, f in ledger.items() if f.status == "HELD"} == {"2.jsonl", "3.jsonl"}
    assert ledger["2.jsonl"].error_type == "SchemaChangePending"
    assert workers.run_and_wait("gate") == "SUCCESS"  # a later run does not commit them either
    table = catalog.load_table("e2e.gate")
    assert "email" not in table.schema().column_names
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [1, 4, 5]

    human = cli(env, "schema", "pending", "gate").stdout
    assert "adds email (string)" in human
    (pending,) = one_json(cli(env, "schema", "pending", "gate", "--json").stdout)
    assert pending["files"] == 2
    assert pending["change"]["added"] == [{"name": "email", "type": "string"}]
    assert pending["first_file"] in {f"s3://{bucket}/in/2.jsonl", f"s3://{bucket}/in/3.jsonl"}
    approved = one_json(cli(env, "schema", "approve", "gate", str(pending["id"]), "--json").stdout)
    assert (approved["status"], approved["files"], approved["decided_by"]) == ("APPROVED", 2, "cli")
    assert workers.run_and_wait("gate") == "SUCCESS"

    table = catalog.load_table("e2e.gate")
    got = table.scan().to_arrow()
    assert ids_by_file(got) == {f"s3://{bucket}/in/{n}.jsonl": [n] for n in range(1, 6)}  # each once
    assert {r["id"]: r["email"] for r in got.to_pylist()}[3] == "c@example.com"
    history = one_json(cli(env, "schema", "history", "gate", "--json").stdout)
    assert [(v["status"], v["approved_by"]) for v in history] == [("CREATED", None), ("APPROVED", "cli")]
    assert history[-1]["schema_id"] == table.schema().schema_id

    put_objects(bucket, {"in/6.jsonl": jsonl([{"id": 6, "phone": "+33 1 23"}])})
    assert workers.run_and_wait("gate") == "SUCCESS"
    (pending,) = one_json(cli(env, "schema", "pending", "gate", "--json").stdout)
    rejected = one_json(cli(env, "schema", "reject", "gate", str(pending["id"]), "--json").stdout)
    assert (rejected["status"], rejected["files"]) == ("REJECTED", 1)
    (failed,) = one_json(cli(env, "files", "gate", "--status", "FAILED", "--json").stdout)
    assert failed["error_type"] == "SchemaRejected"
    assert failed["error_message"].endswith("schema change rejected by cli: adds phone (string)")
    # Deciding twice is refused with one line.
    again = cli(env, "schema", "approve", "gate", str(pending["id"]), expect=2)
    assert "is REJECTED, not PENDING" in again.stderr
    assert workers.stop_workers(started) == [0, 0]
