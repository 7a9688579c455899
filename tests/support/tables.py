"""The Iceberg table read back as a user would: from icefloe's default catalog, or a runtime's.

:class:`SeededTable` is the exactly-once check of the fault harnesses: every seeded record carries
a unique id; at the end the table holds each exactly once, every file is SUCCESS in the ledger, and
every snapshot icefloe committed carries its own batch id and agrees with the ledger.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from icefloe.runtime import Runtime
from tests.support.ledger import LedgerQueries

BATCH_ID = "icefloe.batch-id"
EXTERNAL_WRITER = "test.external-writer"
"""Snapshot property marking the commits of a test's own writer (not icefloe's)."""


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def jsonl_file(first_id: int, count: int) -> bytes:
    """``count`` records with the unique ids ``first_id``, ``first_id + 1``, ..."""
    return jsonl([{"id": i, "payload": f"record-{i}"} for i in range(first_id, first_id + count)])


def default_catalog(env: dict[str, str]) -> SqlCatalog:
    """The catalog icefloe uses when ICEFLOE_CATALOG is unset: a pyiceberg SQL catalog named
    ``icefloe`` in the ledger database, warehouse under ``ICEFLOE_HOME``. The caller disposes of
    its engine."""
    warehouse = (Path(env["ICEFLOE_HOME"]) / "warehouse").resolve()
    warehouse.mkdir(parents=True, exist_ok=True)
    return SqlCatalog("icefloe", uri=env["ICEFLOE_DATABASE_URL"], warehouse=warehouse.as_uri())


def load_table(rt: Runtime, identifier: str) -> Table:
    return rt.catalog.load_table(identifier)


def rows(rt: Runtime, identifier: str) -> pa.Table:
    """Every row of the table at its current snapshot."""
    return load_table(rt, identifier).scan().to_arrow()


def ids_by_file(table: pa.Table, column: str = "id") -> dict[str, list[Any]]:
    """``_source_file`` → sorted values of ``column`` (the rows each file contributed)."""
    out: dict[str, list[Any]] = {}
    for source, value in zip(table.column("_source_file").to_pylist(), table.column(column).to_pylist(), strict=True):
        out.setdefault(source, []).append(value)
    return {k: sorted(v) for k, v in out.items()}


def icefloe_snapshots(table: Table) -> list[dict[str, str]]:
    """The summary properties of every snapshot of ``table``, oldest first."""
    return [
        dict(snap.summary.additional_properties) if snap.summary is not None else {}
        for snap in table.metadata.snapshots
    ]


class SeededTable(LedgerQueries):
    """A table fed from seeded files of unique ids, read back and checked exactly once.

    The class using it provides ``env`` (of the icefloe processes: database and home), ``db``,
    ``ids`` (every seeded id), ``rows_per_file`` (s3:// URI → records) and ``table_identifier``;
    :meth:`close_catalog` releases the catalog's connections.
    """

    env: dict[str, str]
    ids: Counter[int]
    rows_per_file: dict[str, int]
    table_identifier: str
    _catalog: SqlCatalog | None = None

    @property
    def catalog(self) -> SqlCatalog:
        """icefloe's default catalog (a SQL catalog in the ledger database), reached directly."""
        if self._catalog is None:
            self._catalog = default_catalog(self.env)
        return self._catalog

    def new_catalog(self) -> SqlCatalog:
        """A catalog of its own (for another thread); the caller disposes of its engine."""
        return default_catalog(self.env)

    def close_catalog(self) -> None:
        if self._catalog is not None:
            self._catalog.engine.dispose()
            self._catalog = None

    def table(self) -> Table:
        return self.catalog.load_table(self.table_identifier)

    def table_exists(self) -> bool:
        return bool(self.catalog.table_exists(self.table_identifier))

    def table_ids(self) -> Counter[int]:
        data = self.table().scan(selected_fields=("id",)).to_arrow()
        return Counter(data["id"].to_pylist())

    def all_succeeded(self) -> bool:
        return self.statuses() == Counter({"SUCCESS": len(self.rows_per_file)})

    def icefloe_snapshots(self, table: Table | None = None) -> list[Any]:
        """The snapshots of icefloe's batches (not a test's external writer's, not `icefloe maintain`'s)."""
        table = table or self.table()
        others = (EXTERNAL_WRITER, "icefloe.maintenance")
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
        """Every seeded id in the table exactly once, every file's rows once, every file SUCCESS with
        no lease left and counted by one run, every icefloe snapshot with its own batch and run id, and
        ledger and snapshots agreeing; returns the table. Rows of a test's external writer are left out."""
        table = self.table()
        data = table.scan(selected_fields=("id", "_source_file")).to_arrow()
        sources = data["_source_file"].to_pylist()
        ours = [i for i, s in zip(data["id"].to_pylist(), sources, strict=True) if s in self.rows_per_file]
        foreign = [s for s in sources if s not in self.rows_per_file and not str(s).startswith("external://")]
        assert not foreign, f"rows from files never seeded: {sorted(set(foreign))[:10]}"

        actual, expected = Counter(ours), Counter(self.ids)
        missing = sorted((expected - actual).elements())
        twice = sorted((actual - expected).elements())
        assert not missing and not twice, (
            f"ids lost: {len(missing)} {missing[:20]}; ids duplicated: {len(twice)} {twice[:20]}"
        )
        per_file = Counter(s for s in sources if s in self.rows_per_file)
        assert per_file == Counter(self.rows_per_file), "some file's rows are not in the table exactly once"

        files = self.files()
        not_done = [(f.file_path, f.status, f.error_type, f.error_message) for f in files if f.status != "SUCCESS"]
        assert not not_done, f"{len(not_done)} file(s) not SUCCESS: {not_done[:10]}"
        assert {f.file_path for f in files} == set(self.rows_per_file)
        leased = [f.file_path for f in files if f.lease_expires_at is not None]
        assert not leased, f"leases left on finished files: {leased[:10]}"
        # The runs' counters add up to the ledger: each file counted SUCCESS by exactly one run, the
        # ones a dead worker committed (found by reconciliation) included.
        (counted,) = self.ledger("SELECT coalesce(sum(files_succeeded), 0) AS n FROM runs")
        assert counted.n == len(files), f"runs count {counted.n} files SUCCESS, the ledger {len(files)}"

        snapshots = self.icefloe_snapshots(table)
        props = [s.summary.additional_properties if s.summary is not None else {} for s in snapshots]
        missing_batch = [s.snapshot_id for s, p in zip(snapshots, props, strict=True) if BATCH_ID not in p]
        assert not missing_batch, f"icefloe snapshots without {BATCH_ID}: {missing_batch}"
        batches = Counter(p[BATCH_ID] for p in props)
        assert all(n == 1 for n in batches.values()), f"a batch committed twice: {batches}"
        assert all(p.get("icefloe.run-id") for p in props), "an icefloe snapshot without icefloe.run-id"
        assert sum(int(p["icefloe.file-count"]) for p in props) == len(self.rows_per_file)
        # Every file points at the snapshot that holds it, and each snapshot at as many files as it says.
        by_snapshot = Counter(f.snapshot_id for f in files)
        expected_counts = {s.snapshot_id: int(p["icefloe.file-count"]) for s, p in zip(snapshots, props, strict=True)}
        assert by_snapshot == Counter(expected_counts), "the ledger's snapshot ids do not match the snapshots' counts"
        return table
