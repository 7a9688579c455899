"""The ledger read straight with SQL, as an operator would query it: files, statuses, runs, leases."""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa

from tests.support.waiting import wait_for

TERMINAL = ("SUCCESS", "PARTIAL", "FAILED", "CANCELLED")
"""Statuses of a finished run."""


class LedgerQueries:
    """Queries on the ledger of the test's database; the class using it provides ``db``."""

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

    def processing(self) -> list[sa.Row[Any]]:
        return [f for f in self.files() if f.status == "PROCESSING"]

    def run_row(self, run_id: int) -> sa.Row[Any]:
        (row,) = self.ledger("SELECT * FROM runs WHERE id = :id", id=run_id)
        return row

    def runs(self) -> list[sa.Row[Any]]:
        return self.ledger("SELECT * FROM runs ORDER BY id")

    def attempt_workers(self, status: str = "SUCCESS") -> set[str]:
        """The workers that ended an attempt with ``status``, from the files' attempt history."""
        rows = self.ledger("SELECT DISTINCT worker_id FROM file_attempts WHERE status = :s", s=status)
        return {r.worker_id for r in rows}

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


class Ledger(LedgerQueries):
    """:class:`LedgerQueries` on an engine of the caller's."""

    def __init__(self, db: sa.Engine) -> None:
        self.db = db
