"""Load check of the REST API: 50 concurrent clients list the files of an ingestion whose ledger
holds 100,000 rows. Not a test: it reports latency percentiles (client side) and throughput.

    .venv/bin/python benchmarks/api_load.py                    # 50 clients x 40 requests
    .venv/bin/python benchmarks/api_load.py --clients 50 --requests 100 --rows 100000

One run:
1. starts an embedded PostgreSQL under a temporary directory (``icefloe.embedded``), applies the
   migrations, defines one ingestion and inserts ``--rows`` ledger rows straight with SQL
   (``generate_series``: 80 % SUCCESS, 15 % DISCOVERED, 5 % FAILED; one modification time a minute);
2. starts ``icefloe serve`` on a free port of 127.0.0.1 and makes a reader token;
3. runs ``--clients`` asyncio clients (httpx, one connection each), ``--requests`` each, after a
   warm-up: 70 % read a page of 100 files from a random position (keyset cursor), 20 % the FAILED
   files from a random position, 10 % a path-prefix page; every answer must be 200;
4. prints p50/p90/p99/max and requests per second, writes them to ``benchmarks/results/``, stops
   the server (SIGTERM) and the database.

Client and server share the machine (2 cores here): the numbers include the clients' own CPU.
Traffic goes to 127.0.0.1 only; the loop is bounded by ``--requests`` and ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
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

from icefloe import embedded, ingestions, migrations, tokens
from icefloe.api import pagination
from icefloe.ingestions import IngestionSpec

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(database_url: str, rows: int) -> tuple[int, str, int, int]:
    """Ingestion id, reader token, and the ledger's id range."""
    migrations.upgrade(database_url)
    engine = sa.create_engine(database_url, poolclass=NullPool)
    try:
        ingestion = ingestions.create(
            engine,
            IngestionSpec(name="load", source="s3://landing/events/", format="jsonl", table="bench.load"),
        )
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    """
                    INSERT INTO files (ingestion_id, file_path, size, etag, status, modified_at, discovered_at,
                                       processed_at, records_ingested, retry_count, error_type, error_message)
                    SELECT :i,
                           's3://landing/events/dt=' || to_char(date '2025-01-01' + (n / 5000), 'YYYY-MM-DD')
                               || '/part-' || lpad(n::text, 7, '0') || '.jsonl',
                           1000 + n % 5000, md5(n::text),
                           CASE WHEN n % 20 = 0 THEN 'FAILED' WHEN n % 20 < 4 THEN 'DISCOVERED' ELSE 'SUCCESS' END,
                           timestamptz '2025-01-01' + n * interval '1 minute', now(),
                           CASE WHEN n % 20 >= 4 THEN now() END, CASE WHEN n % 20 >= 4 THEN 100 END,
                           CASE WHEN n % 20 = 0 THEN 1 ELSE 0 END,
                           CASE WHEN n % 20 = 0 THEN 'CorruptFile' END,
                           CASE WHEN n % 20 = 0 THEN 'line 3: invalid JSON' END
                    FROM generate_series(1, CAST(:rows AS int)) AS n
                    """
                ),
                {"i": ingestion.id, "rows": rows},
            )
            conn.execute(sa.text("ANALYZE files"))
            low, high = conn.execute(sa.text("SELECT min(id), max(id) FROM files")).one()
        _, secret = tokens.create(engine, name="load-reader", role="reader")
    finally:
        engine.dispose()
    return ingestion.id, secret, int(low), int(high)


def request_params(rng: random.Random, low: int, high: int) -> dict[str, str | int]:
    roll = rng.random()
    start = pagination.encode(rng.randint(low - 1, high - 100))
    if roll < 0.7:
        return {"limit": 100, "cursor": start}
    if roll < 0.9:
        return {"limit": 100, "status": "FAILED", "cursor": start}
    day = rng.randint(0, (high - low) // 5000)
    return {"limit": 100, "path_prefix": f"events/dt={dt.date(2025, 1, 1) + dt.timedelta(days=day)}/"}


async def client(
    url: str, token: str, path: str, n: int, rng: random.Random, low: int, high: int, deadline: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120, limits=limits
    ) as http:
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            params = request_params(rng, low, high)
            started = time.perf_counter()
            response = await http.get(path, params=params)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200 or (len(response.json()["items"]) == 0 and "status" not in params):
                errors += 1
    return latencies, errors


async def load(
    url: str, token: str, path: str, clients: int, requests: int, low: int, high: int, max_seconds: float
) -> tuple[list[float], int, float]:
    deadline = time.monotonic() + max_seconds
    started = time.perf_counter()
    results = await asyncio.gather(
        *(client(url, token, path, requests, random.Random(c), low, high, deadline) for c in range(clients))
    )
    elapsed = time.perf_counter() - started
    return [x for lat, _ in results for x in lat], sum(e for _, e in results), elapsed


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per client")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="icefloe-api-load-"))
    print(f"workdir {workdir}", flush=True)
    database_url = embedded.ensure_postgres(workdir / "pg")
    server: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.perf_counter()
        ingestion_id, token, low, high = seed(database_url, args.rows)
        print(f"seeded {args.rows} ledger rows in {time.perf_counter() - t0:.1f}s", flush=True)

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

        path = f"/api/v1/ingestions/{ingestion_id}/files"
        asyncio.run(load(url, token, path, 10, 10, low, high, 60))  # warm-up: pools, plans, imports
        load_before = os.getloadavg()[0]
        latencies, errors, elapsed = asyncio.run(
            load(url, token, path, args.clients, args.requests, low, high, args.max_seconds)
        )
        result = {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "clients": args.clients,
            "requests": len(latencies),
            "ledger_rows": args.rows,
            "page_size": 100,
            "errors": errors,
            "seconds": round(elapsed, 2),
            "requests_per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p90_ms": round(percentile(latencies, 90) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
            "cpus": os.cpu_count(),
            "load_average_before": round(load_before, 2),
        }
        print(json.dumps(result, indent=2))
        out = ROOT / "benchmarks" / "results" / f"api_load-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {out}")
        return 1 if errors else 0
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
