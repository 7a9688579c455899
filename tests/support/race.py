"""One process of the expired-lease race, run as a script by the test (``python race.py NAME GO_FILE
THREADS``, see :func:`race`): reconcile + claim from several threads at one instant."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa


def _wait_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def race(argv: list[str]) -> int:
    """``race NAME GO_FILE THREADS``: once GO_FILE exists, every thread reconciles the expired leases
    of NAME, then claims one batch and prints what it got (one JSON line per thread); the claims are
    held until GO_FILE + ".release" exists, then released (unpenalised) and the process exits."""
    from icefloe import commit, ingestions, ledger, tables
    from icefloe.ledger import LockBounds
    from icefloe.runtime import Runtime
    from icefloe.settings import Settings

    name, go_file, threads = argv[0], Path(argv[1]), int(argv[2])
    release_file = go_file.with_name(go_file.name + ".release")
    rt = Runtime.open(Settings.from_env(os.environ), migrate=False)
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
                rt.db, lambda: rt.catalog, ingestion, LockBounds.for_lease(rt.settings.lease_seconds)
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
        sys.exit(race(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} race NAME GO_FILE THREADS")
