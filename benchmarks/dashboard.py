"""How fast the dashboard's overview renders with 100 ingestions and 1,000,000 ledger rows. Not a
test: it reports the time of a whole page (server side and the HTTP round trip), as a browser gets it.

    .venv/bin/python benchmarks/dashboard.py                      # 100 ingestions, 1 M rows, 20 loads
    .venv/bin/python benchmarks/dashboard.py --ingestions 100 --rows 1000000 --loads 20

One run:
1. starts an embedded PostgreSQL under a temporary directory (``icefloe.embedded``), applies the
   migrations, defines ``--ingestions`` ingestions and inserts ``--rows`` ledger rows spread over them
   straight with SQL, in one ``INSERT … SELECT generate_series`` (96 % SUCCESS, 2 % FAILED, 1 %
   DISCOVERED, 1 % SKIPPED; discovered over the last two days), 48 runs per ingestion over the last
   two days (one every hour), and a few alerts; then ``VACUUM ANALYZE`` (as autovacuum would);
2. starts ``icefloe serve`` on a free port of 127.0.0.1 and signs in with a reader token through the
   sign-in form (cookie and CSRF token as a browser keeps them);
3. loads ``/`` (the overview) and the page of the largest ingestion ``--loads`` times each, after a
   warm-up, then times the overview's queries alone, and prints p50/p90/max and the query times,
   writing them to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from icefloe import embedded, ingestions, ledger, migrations, tokens
from icefloe.ingestions import IngestionSpec

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(database_url: str, n_ingestions: int, rows: int) -> str:
    """The reader token's secret."""
    migrations.upgrade(database_url)
    engine = sa.create_engine(database_url, poolclass=NullPool)
    try:
        for n in range(n_ingestions):
            spec = IngestionSpec(
                name=f"feed-{n:03d}", source=f"s3://landing/feed-{n:03d}/", format="jsonl", table=f"bench.feed_{n:03d}"
            )
            ingestions.create(engine, spec)
        with engine.begin() as conn:
            ids = [r.id for r in conn.execute(sa.text("SELECT id FROM ingestions ORDER BY id"))]
            conn.execute(
                sa.text(
                    """
                    INSERT INTO files (ingestion_id, file_path, size, etag, status, modified_at, discovered_at,
                                       processed_at, records_ingested, bytes_read, retry_count, error_type,
                                       error_message)
                    SELECT ids[1 + (n / 100) % cardinality(ids)],
                           's3://landing/feed/part-' || lpad(n::text, 8, '0') || '.jsonl',
                           1000 + n % 5000, md5(n::text),
                           CASE WHEN n % 100 < 2 THEN 'FAILED' WHEN n % 100 = 2 THEN 'DISCOVERED'
                                WHEN n % 100 = 3 THEN 'SKIPPED' ELSE 'SUCCESS' END,
                           now() - (n % 172800) * interval '1 second', now() - (n % 172800) * interval '1 second',
                           CASE WHEN n % 100 >= 4 THEN now() END, CASE WHEN n % 100 >= 4 THEN 100 END,
                           CASE WHEN n % 100 >= 4 THEN 1000 + n % 5000 END,
                           CASE WHEN n % 100 < 2 THEN 1 ELSE 0 END,
                           CASE WHEN n % 100 < 2 THEN 'MalformedJSON' END,
                           CASE WHEN n % 100 < 2 THEN 'line 3: invalid JSON' END
                    FROM generate_series(1, CAST(:rows AS int)) AS n, (SELECT CAST(:ids AS bigint[]) AS ids) AS i
                    """
                ),
                {"rows": rows, "ids": ids},
            )
            conn.execute(
                sa.text(
                    """
                    INSERT INTO runs (ingestion_id, trigger, status, started_at, finished_at, files_discovered,
                                      files_succeeded, files_failed, records_ingested, bytes_read)
                    SELECT i.id, 'schedule', CASE WHEN h % 7 = 0 THEN 'PARTIAL' ELSE 'SUCCESS' END,
                           now() - h * interval '1 hour', now() - h * interval '1 hour' + interval '40 seconds',
                           200, 196, CASE WHEN h % 7 = 0 THEN 4 ELSE 0 END, 19600 + h * 10, 2000000 + h * 1000
                    FROM ingestions i, generate_series(1, 48) AS h
                    """
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO alerts (incident_key, kind, ingestion_id, subject, body) "
                    "SELECT 'bench-' || id, 'files_failed', id, 'files failed in ' || name, '{}' "
                    "FROM ingestions WHERE id % 10 = 0"
                )
            )
        # What autovacuum does soon after a bulk insert: statistics, and the visibility map that
        # lets the status counts read the index alone.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("files", "runs", "alerts"):
                conn.execute(sa.text(f"VACUUM ANALYZE {table}"))
        _, secret = tokens.create(engine, name="bench-reader", role="reader")
    finally:
        engine.dispose()
    return secret


def sign_in(client: httpx.Client, secret: str) -> None:
    form = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None, form.text
    answer = client.post("/login", data={"token": secret, "csrf_token": csrf.group(1), "next": "/"})
    assert answer.status_code == 303, answer.text


def timed(client: httpx.Client, path: str, loads: int) -> list[float]:
    out = []
    for _ in range(loads):
        t0 = time.perf_counter()
        page = client.get(path)
        out.append(time.perf_counter() - t0)
        assert page.status_code == 200, page.text[:500]
    return out


OVERVIEW_QUERIES = ("status_counts_by_ingestion", "lag_by_ingestion", "last_runs", "hourly_totals")


def query_times(database_url: str, repeats: int = 5) -> dict[str, float]:
    """Median milliseconds of each overview query alone (what the page's time is made of)."""
    engine = sa.create_engine(database_url, poolclass=NullPool)
    out = {}
    try:
        with engine.connect() as conn:
            for name in OVERVIEW_QUERIES:
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    getattr(ledger, name)(conn)
                    times.append(time.perf_counter() - t0)
                out[name] = round(statistics.median(times) * 1000, 1)
    finally:
        engine.dispose()
    return out


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ingestions", type=int, default=100)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="icefloe-dashboard-bench-"))
    print(f"workdir {workdir}", flush=True)
    database_url = embedded.ensure_postgres(workdir / "pg")
    server: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.perf_counter()
        secret = seed(database_url, args.ingestions, args.rows)
        print(f"seeded {args.ingestions} ingestions, {args.rows} ledger rows in {time.perf_counter() - t0:.1f}s")

        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEFLOE_", "AWS_", "PYICEBERG_"))}
        env |= {"ICEFLOE_DATABASE_URL": database_url, "ICEFLOE_HOME": str(workdir / "home")}
        log = (workdir / "serve.log").open("wb")
        icefloe = str(Path(sys.executable).parent / "icefloe")
        server = subprocess.Popen(
            [icefloe, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"server did not start; see {workdir / 'serve.log'}")
            time.sleep(0.3)

        with httpx.Client(base_url=url, timeout=60) as client:
            sign_in(client, secret)
            timed(client, "/", 3)  # warm-up: pools, plans, templates
            load_before = os.getloadavg()[0]
            overview = timed(client, "/", args.loads)
            ingestion_page = timed(client, "/ingestions/feed-000", args.loads)
            size = len(client.get("/").content)
        queries = query_times(database_url)
        result = {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "ingestions": args.ingestions,
            "ledger_rows": args.rows,
            "loads": args.loads,
            "overview": summary(overview),
            "overview_bytes": size,
            "ingestion_page": summary(ingestion_page),
            "overview_queries_ms": queries,
            "cpus": os.cpu_count(),
            "load_average_before": round(load_before, 2),
        }
        print(json.dumps(result, indent=2))
        out = ROOT / "benchmarks" / "results" / f"dashboard-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {out}")
        return 0
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        embedded.release_postgres(workdir / "pg")


if __name__ == "__main__":
    sys.exit(main())
