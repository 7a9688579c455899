"""Fixtures of the fault tests: a seeded ingestion driven by real ``icefloe run`` processes.

After the pattern of Kafka's transactions test: every seeded record carries a unique integer id;
a test kills, pauses or races ``icefloe run`` processes, lets later runs reconcile and finish, then
checks the Iceberg table holds every seeded id exactly once (nothing lost, nothing twice), that every
file of the ledger is SUCCESS, and that every snapshot icefloe committed carries its batch id.

``make_faulty(...)`` seeds the files and defines the ingestion; the :class:`FaultIngestion` it
returns is the test's handle on the runs, the ledger and the table. Every process it starts is
stopped (SIGCONT + SIGKILL, by pid) at the end of the test; every wait has a deadline. The runs
use a 3 s lease (``ICEFLOE_LEASE_SECONDS``), so a dead worker's batch is reconcilable soon.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from ops_support import LedgerQueries
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table
from sqlalchemy.pool import NullPool

from icefloe import ingestions, ledger
from icefloe.ingestions import IngestionSpec

if TYPE_CHECKING:
    from tests.conftest import PutObjects

TABLE = "faults.events"
INGESTION = "events"
LEASE_SECONDS = 3
BATCH_ID = "icefloe.batch-id"
RUN_TIMEOUT = 120.0  # one `icefloe run` of a few hundred tiny files takes seconds; a hang fails


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class RunResult:
    """One finished ``icefloe run --json`` process."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        """The run's ``--json`` object (fails the test when the process printed none)."""
        try:
            data: dict[str, Any] = json.loads(self.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"icefloe run printed no JSON (rc={self.returncode}):\n{self.stdout}\n{self.stderr}")
        return data

    def describe(self) -> str:
        return f"rc={self.returncode}\nstdout: {self.stdout.strip()}\nstderr: {self.stderr.strip()[-3000:]}"


@dataclass
class FaultIngestion(LedgerQueries):
    """A seeded S3 prefix, an ingestion of it, and the tools to run, break and check icefloe."""

    env: dict[str, str]
    database_url: str
    bucket: str
    tmp_path: Path
    db: sa.Engine
    ids: list[int] = field(default_factory=list)
    rows_per_file: dict[str, int] = field(default_factory=dict)  # s3:// URI → records
    _procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _outputs: dict[int, tuple[Path, Path]] = field(default_factory=dict)  # pid → stdout, stderr files
    _catalog: SqlCatalog | None = None

    wait_for = staticmethod(wait_for)

    # ------------------------------------------------------------------ processes

    def _env(self, fault: str | None, extra_env: dict[str, str] | None) -> dict[str, str]:
        env = dict(self.env)
        env.pop("ICEFLOE_FAULT_POINT", None)
        if fault:
            env["ICEFLOE_FAULT_POINT"] = fault
        env.update(extra_env or {})
        return env

    def start(
        self, *, fault: str | None = None, extra_env: dict[str, str] | None = None, verbose: bool = False
    ) -> subprocess.Popen[str]:
        """Start ``icefloe run NAME --json`` (``-v``: INFO logs on stderr) in the background, its
        output going to files."""
        out_path, err_path = (self.tmp_path / f"run-{uuid.uuid4().hex[:8]}.{ext}" for ext in ("out", "err"))
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(
                ["icefloe", *(["-v"] if verbose else []), "run", INGESTION, "--json"],
                env=self._env(fault, extra_env),
                stdout=out,
                stderr=err,
                text=True,
            )
        self._procs.append(proc)
        self._outputs[proc.pid] = (out_path, err_path)
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = RUN_TIMEOUT) -> RunResult:
        """Wait for a started run (SIGKILL and fail after ``timeout``) and return its outcome."""
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            pytest.fail(f"icefloe run (pid {proc.pid}) still running after {timeout:.0f}s")
        out_path, err_path = self._outputs[proc.pid]
        return RunResult(proc.returncode, out_path.read_text(), err_path.read_text())

    def run(self, *, fault: str | None = None, extra_env: dict[str, str] | None = None) -> RunResult:
        """One ``icefloe run NAME --json`` to its end."""
        return self.finish(self.start(fault=fault, extra_env=extra_env))

    def stop_between_transactions(self, proc: subprocess.Popen[str], tries: int = 50) -> None:
        """SIGSTOP ``proc`` at a moment it has no ledger transaction open (a heartbeat caught
        mid-UPDATE would keep its files' rows locked, and reconciliation skips locked rows).

        Only for a test where ``proc`` is the only icefloe process on the database.
        """
        for _ in range(tries):
            os.kill(proc.pid, signal.SIGSTOP)
            if not self.ledger(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL LIMIT 1"
            ):
                return
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.05)
        pytest.fail(f"could not stop pid {proc.pid} outside a transaction")

    @staticmethod
    def kill(proc: subprocess.Popen[str]) -> None:
        """SIGKILL one process we started (resumed first, in case it is stopped)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop_all(self) -> None:
        for proc in self._procs:
            self.kill(proc)

    # ------------------------------------------------------------------ ledger

    def processing(self) -> list[sa.Row[Any]]:
        return [f for f in self.files() if f.status == "PROCESSING"]

    def all_succeeded(self) -> bool:
        return self.statuses() == Counter({"SUCCESS": len(self.rows_per_file)})

    @contextlib.contextmanager
    def commit_lock_held(self) -> Iterator[None]:
        """Hold icefloe's per-table commit lock (the one every commit and reconciliation takes)
        from this process, so runs pile up at their first commit until the block ends."""
        with self.db.begin() as conn:
            ledger.lock_table(conn, TABLE)
            yield

    def wait_leases_expired(self, timeout: float = 4 * LEASE_SECONDS + 10) -> None:
        """Until no PROCESSING file holds a live lease (by the database clock)."""
        wait_for(
            lambda: (
                not self.ledger("SELECT 1 FROM files WHERE status = 'PROCESSING' AND lease_expires_at >= now() LIMIT 1")
            ),
            timeout=timeout,
            what="the leases of PROCESSING files to expire",
            interval=0.25,
        )

    def run_until_done(self, max_runs: int = 3) -> list[RunResult]:
        """Runs (each after any lease left by a dead worker expired) until every file is SUCCESS."""
        results: list[RunResult] = []
        for _ in range(max_runs):
            self.wait_leases_expired()
            result = self.run()
            results.append(result)
            assert result.returncode == 0, result.describe()
            if self.all_succeeded():
                return results
        pytest.fail(f"files not all SUCCESS after {max_runs} clean runs: {dict(self.statuses())}")

    # ------------------------------------------------------------------ table

    table_identifier = TABLE

    def new_catalog(self) -> SqlCatalog:
        """A catalog of its own (for another thread); the caller disposes of its engine."""
        return make_catalog(self.env)

    @property
    def catalog(self) -> SqlCatalog:
        """The default catalog icefloe uses: a SQL catalog in the ledger database."""
        if self._catalog is None:
            self._catalog = make_catalog(self.env)
        return self._catalog

    def table(self) -> Table:
        return self.catalog.load_table(TABLE)

    def table_exists(self) -> bool:
        return self.catalog.table_exists(TABLE)

    def icefloe_snapshots(self, table: Table | None = None) -> list[Any]:
        """The snapshots of icefloe's batches (not an external test writer's, not `icefloe maintain`'s)."""
        table = table or self.table()
        others = ("test.external-writer", "icefloe.maintenance")
        return [
            s
            for s in table.metadata.snapshots
            if s.summary is None or not any(k in s.summary.additional_properties for k in others)
        ]

    def snapshots_of_batch(self, batch_id: uuid.UUID | str, table: Table | None = None) -> list[Any]:
        return [
            s
            for s in self.icefloe_snapshots(table)
            if s.summary is not None and s.summary.additional_properties.get(BATCH_ID) == str(batch_id)
        ]

    def assert_exact(self) -> Table:
        """The whole exactly-once check: table ids, rows per file, ledger and snapshots agree."""
        table = self.table()
        data = table.scan(selected_fields=("id", "_source_file")).to_arrow()
        sources = data["_source_file"].to_pylist()
        ours = [i for i, s in zip(data["id"].to_pylist(), sources, strict=True) if s in self.rows_per_file]

        actual, expected = Counter(ours), Counter(self.ids)
        missing = sorted((expected - actual).elements())
        twice = sorted((actual - expected).elements())
        assert not missing and not twice, (
            f"ids lost: {len(missing)} {missing[:20]}; ids duplicated: {len(twice)} {twice[:20]}"
        )
        per_file = Counter(s for s in sources if s in self.rows_per_file)
        assert per_file == Counter(self.rows_per_file), "some file's rows are not in the table exactly once"

        files = self.files()
        not_done = [(f.file_path, f.status, f.error_type) for f in files if f.status != "SUCCESS"]
        assert not not_done, f"{len(not_done)} file(s) not SUCCESS: {not_done[:10]}"
        assert {f.file_path for f in files} == set(self.rows_per_file)

        snapshots = self.icefloe_snapshots(table)
        missing_batch = [
            s.snapshot_id for s in snapshots if s.summary is None or BATCH_ID not in s.summary.additional_properties
        ]
        assert not missing_batch, f"icefloe snapshots without {BATCH_ID}: {missing_batch}"
        props = [s.summary.additional_properties for s in snapshots]
        batch_counts = Counter(p[BATCH_ID] for p in props)
        assert all(n == 1 for n in batch_counts.values()), f"a batch committed twice: {batch_counts}"
        assert all(p.get("icefloe.run-id") for p in props), "an icefloe snapshot without icefloe.run-id"
        assert sum(int(p["icefloe.file-count"]) for p in props) == len(self.rows_per_file)

        # Every file points at the snapshot that holds it, and each snapshot at as many files as it says.
        by_snapshot = Counter(f.snapshot_id for f in files)
        assert by_snapshot == Counter(
            {s.snapshot_id: int(s.summary.additional_properties["icefloe.file-count"]) for s in snapshots}
        ), "the ledger's snapshot ids do not match the snapshots' file counts"
        return table


def make_catalog(env: dict[str, str]) -> SqlCatalog:
    """icefloe's default catalog for the environment of a test's runs."""
    warehouse = (Path(env["ICEFLOE_HOME"]) / "warehouse").resolve()
    warehouse.mkdir(parents=True, exist_ok=True)
    return SqlCatalog("icefloe", uri=env["ICEFLOE_DATABASE_URL"], warehouse=warehouse.as_uri())


def jsonl_file(first_id: int, count: int) -> bytes:
    return b"".join(
        json.dumps({"id": i, "payload": f"record-{i}"}).encode() + b"\n" for i in range(first_id, first_id + count)
    )


@pytest.fixture
def make_faulty(
    icefloe_env: dict[str, str],
    database_url: str,
    bucket: str,
    put_objects: PutObjects,
    tmp_path: Path,
) -> Iterator[Callable[..., FaultIngestion]]:
    """``make_faulty(files=N, rows=R, max_files_per_commit=20, max_retries=10)``: seed N JSONL files
    of R records with unique ids under ``s3://bucket/in/``, define the ingestion, return its handle."""
    env = dict(icefloe_env, ICEFLOE_LEASE_SECONDS=str(LEASE_SECONDS), ICEFLOE_READ_THREADS="4")
    db = sa.create_engine(database_url, poolclass=NullPool)
    made: list[FaultIngestion] = []

    def make(
        *, files: int = 100, rows: int = 5, max_files_per_commit: int = 20, max_retries: int = 10
    ) -> FaultIngestion:
        handle = FaultIngestion(env=env, database_url=database_url, bucket=bucket, tmp_path=tmp_path, db=db)
        objects = {}
        for n in range(files):
            key = f"in/part-{n:05d}.jsonl"
            objects[key] = jsonl_file(n * rows, rows)
            handle.rows_per_file[f"s3://{bucket}/{key}"] = rows
        handle.ids = list(range(files * rows))
        assert put_objects(bucket, objects) == files
        ingestions.create(
            db,
            IngestionSpec(
                name=INGESTION,
                source=f"s3://{bucket}/in/",
                format="jsonl",
                table=TABLE,
                max_files_per_commit=max_files_per_commit,
                max_retries=max_retries,
            ),
        )
        # The catalog's own tables, made before any run starts: workers racing to create them on
        # a fresh database is a defect of its own (test_concurrent_runs' fresh-database test).
        make_catalog(env).engine.dispose()
        made.append(handle)
        return handle

    try:
        yield make
    finally:
        for handle in made:
            handle.stop_all()
            if handle._catalog is not None:
                handle._catalog.engine.dispose()
        db.dispose()
