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
from typing import Any

import pytest
import sqlalchemy as sa
from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy.pool import NullPool

from icefloe import ingestions, ledger
from icefloe.ingestions import IngestionSpec
from tests.support.services import PutObjects
from tests.support.tables import SeededTable, default_catalog, jsonl_file
from tests.support.waiting import wait_for

TABLE = "faults.events"
INGESTION = "events"
LEASE_SECONDS = 3
RUN_TIMEOUT = 120.0  # one `icefloe run` of a few hundred tiny files takes seconds; a hang fails


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
class FaultIngestion(SeededTable):
    """A seeded S3 prefix, an ingestion of it, and the tools to run, break and check icefloe."""

    env: dict[str, str]
    database_url: str
    bucket: str
    tmp_path: Path
    db: sa.Engine
    ids: Counter[int] = field(default_factory=Counter)
    rows_per_file: dict[str, int] = field(default_factory=dict)  # s3:// URI → records
    _procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _outputs: dict[int, tuple[Path, Path]] = field(default_factory=dict)  # pid → stdout, stderr files
    _catalog: SqlCatalog | None = None
    table_identifier: str = TABLE
    put_objects: PutObjects | None = None
    rows: int = 5
    bad_per_file: int = 0

    wait_for = staticmethod(wait_for)

    def seed(self, files: int) -> None:
        """Put ``files`` more JSONL files under ``in/``, numbered after those already seeded, each
        of ``rows`` records with unique ids (and ``bad_per_file`` broken lines, each unique)."""
        assert self.put_objects is not None
        first = len(self.rows_per_file)
        objects = {}
        for n in range(first, first + files):
            key = f"in/part-{n:05d}.jsonl"
            broken = b"".join(b'{"bad": %d-%d\n' % (n, b) for b in range(self.bad_per_file))
            objects[key] = jsonl_file(n * self.rows, self.rows) + broken
            self.rows_per_file[f"s3://{self.bucket}/{key}"] = self.rows
        self.ids.update(range(first * self.rows, (first + files) * self.rows))
        assert self.put_objects(self.bucket, objects) == files

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

    @contextlib.contextmanager
    def commit_lock_held(self) -> Iterator[None]:
        """Hold icefloe's per-table commit lock (the one every commit and reconciliation takes)
        from this process, so runs pile up at their first commit until the block ends."""
        with self.db.begin() as conn:
            ledger.lock_table(conn, TABLE)
            yield

    def wait_leases_expired(self, timeout: float = 4 * LEASE_SECONDS + 10) -> None:
        """Until no PROCESSING file holds a live lease (by the database clock)."""
        super().wait_leases_expired(timeout)

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
        *,
        files: int = 100,
        rows: int = 5,
        max_files_per_commit: int = 20,
        max_retries: int = 10,
        on_bad_record: str = "fail-file",
        bad_per_file: int = 0,
    ) -> FaultIngestion:
        handle = FaultIngestion(
            env=env,
            database_url=database_url,
            bucket=bucket,
            tmp_path=tmp_path,
            db=db,
            put_objects=put_objects,
            rows=rows,
            bad_per_file=bad_per_file,
        )
        handle.seed(files)
        ingestions.create(
            db,
            IngestionSpec(
                name=INGESTION,
                source=f"s3://{bucket}/in/",
                format="jsonl",
                table=TABLE,
                max_files_per_commit=max_files_per_commit,
                max_retries=max_retries,
                on_bad_record=on_bad_record,
            ),
        )
        # The catalog's own tables, made before any run starts: workers racing to create them on
        # a fresh database is a defect of its own (test_concurrent_runs' fresh-database test).
        default_catalog(env).engine.dispose()
        made.append(handle)
        return handle

    try:
        yield make
    finally:
        for handle in made:
            handle.stop_all()
            handle.close_catalog()
        db.dispose()
