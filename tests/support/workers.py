"""The operations fault tests' harness: a seeded S3 prefix with unique record ids, one ingestion of
it, the ``icefloe worker``/``run`` processes of the test (:class:`~.processes.Processes`), and the
exactly-once check of the table against the seeded ids and the ledger (:class:`~.tables.SeededTable`).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy.pool import NullPool

from tests.support import race
from tests.support.ledger import TERMINAL
from tests.support.processes import Proc, Processes
from tests.support.tables import SeededTable, jsonl_file
from tests.support.waiting import Timeout, wait_for


class RunDidNotResume(AssertionError):
    """A run did not finish by itself after its database came back, with a database error escaping
    a batch's staging in the workers' logs (liveness, not safety: raised only after the table was
    checked exact)."""


class RunFinishedEarly(AssertionError):
    """A run finished (SUCCESS) while files of its ingestion were still unresolved, so they wait for
    a next run nobody queued (raised only after the table was checked exact once they are done)."""


@dataclass
class Ops(Processes, SeededTable):
    """A seeded prefix of a bucket, one ingestion of it, and the ``icefloe`` processes of a test.

    ``env`` is the environment of the processes (their ``ICEFLOE_DATABASE_URL`` may go through a
    proxy); ``database_url`` is the test's own direct way to the same database.
    """

    env: dict[str, str]
    database_url: str
    bucket: str
    tmp_path: Path
    s3_client: Any
    name: str = "events"
    table_identifier: str = "ops.events"
    ids: Counter[int] = field(default_factory=Counter)
    rows_per_file: dict[str, int] = field(default_factory=dict)  # s3:// URI → records
    procs: list[Proc] = field(default_factory=list)
    db: sa.Engine = field(init=False)
    _catalog: SqlCatalog | None = None
    _next_id: int = 0

    def __post_init__(self) -> None:
        self.db = sa.create_engine(self.database_url, poolclass=NullPool)  # connects on first use

    @property
    def catalog(self) -> SqlCatalog:
        """icefloe's default catalog, reached directly; an S3 warehouse is read straight from the
        store, not through the processes' fault proxy."""
        warehouse = self.env.get("ICEFLOE_WAREHOUSE", "")
        if self._catalog is None and warehouse.startswith("s3://"):
            self._catalog = SqlCatalog(
                "icefloe",
                uri=self.database_url,
                warehouse=warehouse,
                **{
                    "s3.endpoint": self.s3_client.meta.endpoint_url,
                    "s3.access-key-id": self.env["AWS_ACCESS_KEY_ID"],
                    "s3.secret-access-key": self.env["AWS_SECRET_ACCESS_KEY"],
                    "s3.region": "us-east-1",
                },
            )
        return super().catalog

    # ------------------------------------------------------------------ seeding

    def seed(self, files: int, rows: int = 3, *, prefix: str = "in/", threads: int = 16) -> list[str]:
        """Upload ``files`` JSONL objects of ``rows`` records with ids never used before; returns their URIs."""
        objects: list[tuple[str, bytes]] = []
        for _ in range(files):
            first = self._next_id
            self._next_id += rows
            key = f"{prefix}part-{first:08d}.jsonl"
            objects.append((key, jsonl_file(first, rows)))
            self.ids.update(range(first, first + rows))
            self.rows_per_file[f"s3://{self.bucket}/{key}"] = rows

        def put(item: tuple[str, bytes]) -> None:
            self.s3_client.put_object(Bucket=self.bucket, Key=item[0], Body=item[1])

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, objects))
        return [f"s3://{self.bucket}/{key}" for key, _ in objects]

    def adopt(self, rows_per_file: dict[str, int], ids: Iterable[int]) -> None:
        """Take over objects seeded elsewhere (a module-wide bucket)."""
        self.rows_per_file.update(rows_per_file)
        self.ids.update(ids)

    def create_ingestion(self, **options: Any) -> Any:
        from icefloe import ingestions
        from icefloe.ingestions import IngestionSpec

        spec = IngestionSpec(
            name=self.name,
            source=f"s3://{self.bucket}/{options.pop('prefix', 'in/')}",
            format="jsonl",
            table=self.table_identifier,
            **options,
        )
        spec.validate()
        return ingestions.create(self.db, spec)

    # ------------------------------------------------------------------ runs

    def start_racer(self, go_file: Path, threads: int) -> Proc:
        """One process of the expired-lease race (see :func:`tests.support.race.race`)."""
        argv = [sys.executable, str(race.__file__), "race", self.name, str(go_file), str(threads)]
        return self.spawn(argv, f"racer-{go_file.stem}-{len(self.procs)}", None)

    def run_once(self, timeout: float = 180.0, extra_env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """One synchronous ``icefloe run NAME --json``: (returncode, summary)."""
        rc, out, err = self.cli("--verbose", "run", self.name, "--json", timeout=timeout, extra_env=extra_env)
        try:
            return rc, json.loads(out)
        except json.JSONDecodeError:
            raise AssertionError(f"icefloe run printed no JSON (rc={rc}):\n{out}\n{err}") from None

    def enqueue(self, *, cli: bool = False) -> int:
        """Queue a PENDING run for the workers; returns its id. ``cli``: with ``icefloe run NAME
        --enqueue --json`` (a process start costs seconds on a loaded machine), else in this process."""
        if cli:
            rc, out, err = self.cli("run", self.name, "--enqueue", "--json", timeout=120)
            assert rc == 0, f"enqueue failed (rc={rc}): {out}\n{err}"
            return int(json.loads(out)["run_id"])
        from icefloe import ingestions, runs

        return int(runs.enqueue(self.db, ingestions.get(self.db, self.name), trigger="cli").id)

    def wait_run(self, run_id: int, timeout: float, procs: Iterable[Proc] = ()) -> sa.Row[Any]:
        """Until the run is finished (SUCCESS, PARTIAL, FAILED, CANCELLED); fails early if a worker died."""
        procs = list(procs)

        def finished() -> sa.Row[Any] | None:
            dead = [p for p in procs if p.popen.poll() is not None]
            if dead:
                raise AssertionError(f"a worker exited while run {run_id} was in progress:\n{self.logs(dead)}")
            row = self.run_row(run_id)
            return row if row.status in TERMINAL else None

        try:
            return wait_for(finished, timeout=timeout, what=f"run {run_id} to finish", interval=0.25)
        except Timeout as exc:
            raise Timeout(
                f"{exc}; run: {dict(self.run_row(run_id)._mapping)}; files: {dict(self.statuses())}"
            ) from None

    def finish_with_runs(self, *, lease_timeout: float = 90, max_runs: int = 3) -> list[dict[str, Any]]:
        """Plain ``icefloe run``s (each once leases left behind expired) until every file is SUCCESS."""
        summaries = []
        for _ in range(max_runs):
            self.wait_leases_expired(lease_timeout)
            rc, summary = self.run_once()
            summaries.append(summary)
            assert rc in (0, 3), f"follow-up run failed: {summary}"
            if self.all_succeeded():
                return summaries
        raise AssertionError(f"files not all SUCCESS after {max_runs} runs: {dict(self.statuses())}")

    def close(self) -> None:
        """Stop every process of the test (by pid) and release the test's connections."""
        self.close_processes()
        self.close_catalog()
        self.db.dispose()
