"""The quarantine table ``<table>__quarantine``: bad records set aside by ``--on-bad-record quarantine``.

One row per bad record: ``_source_file``, ``_row_number`` (1-based line of the source; a CSV row's
first line), ``_error``, ``_raw`` (the record's text as written), ``_ingested_at``, and
``_batch_id`` (the batch that set it aside: the ``icefloe.batch-id`` of its snapshot).

Exactly once, with the data table (README, delivery guarantee). Under the data table's lock, after
the data table's snapshot search found nothing, a batch makes **two** commits, in this order:

1. the quarantine commit: one Iceberg transaction that deletes the rows of every *earlier* batch
   that held these file versions (attempts that never reached step 2: stale) and, under
   ``--on-change replace``, the rows of the replaced versions, then appends this batch's bad
   records; its snapshot carries the batch id;
2. the data commit (:mod:`icefloe.commit`).

A crash between 1 and 2 leaves stale rows and no data: the lease expires, the data table's search
finds nothing, the files are claimed again in a new batch, whose step 1 deletes the stale rows
while it appends them anew. A crash after 2 is found by the data table's search (step 1 landed
before it). A retry of the same batch after an unknown outcome finds its own batch id in the
quarantine table's snapshots and skips step 1. So each bad record is in the quarantine table once,
and only next to a committed data batch.

A worker frozen inside the commit window (see :mod:`icefloe.commit`) is fenced off by the same
compare-and-swap as its data commit: the quarantine table's head is loaded (:func:`load`) *before*
the data table's, so whoever took the files over and committed them meanwhile has moved both heads
(its quarantine commit appends the same bad records), and the frozen worker's swap fails. A table
someone else created while we were not looking is such a move too.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from icefloe import tables
from icefloe.errors import CommitConflictError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from icefloe.engines import StagedBatch
    from icefloe.ledger import Batch

SUFFIX = "__quarantine"
SCHEMA = pa.schema(
    [
        pa.field("_source_file", pa.string()),
        pa.field("_row_number", pa.int64()),
        pa.field("_error", pa.string()),
        pa.field("_raw", pa.string()),
        pa.field("_ingested_at", pa.timestamp("us", tz="UTC")),
        pa.field("_batch_id", pa.string()),
    ]
)


def identifier(table_identifier: str) -> str:
    """The quarantine table of a data table: same namespace, ``__quarantine`` appended."""
    return table_identifier + SUFFIX


def rows(staged: StagedBatch, batch_id: str, ingested_at: dt.datetime) -> pa.Table | None:
    """The bad records of the batch's succeeded files, as quarantine rows (None: there are none)."""
    columns: dict[str, list[object]] = {f.name: [] for f in SCHEMA}
    for outcome in staged.succeeded:
        for bad in staged.bad_records.get(outcome.file.id, ()):
            columns["_source_file"].append(outcome.file.file_path)
            columns["_row_number"].append(bad.row_number)
            columns["_error"].append(bad.error)
            columns["_raw"].append(bad.raw)
            columns["_ingested_at"].append(ingested_at)
            columns["_batch_id"].append(batch_id)
    if not columns["_row_number"]:
        return None
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def load(catalog: Catalog, table_identifier: str) -> Table | None:
    """The quarantine table of ``table_identifier`` as it is now (None: not created yet)."""
    name = identifier(table_identifier)
    with tables.iceberg_errors(name):
        return tables.load_table(catalog, name)


def commit(
    catalog: Catalog,
    table_identifier: str,
    table: Table | None,
    batch: Batch,
    staged: StagedBatch,
    properties: dict[str, str],
    replaced: Sequence[str],
    since_ms: int,
) -> int:
    """Step 1 above, under the data table's lock, on ``table`` as :func:`load` returned it before
    the data table was loaded; returns the snapshots it added (0 or 1).

    Raises what :func:`icefloe.tables.iceberg_errors` raises: the caller's retry loop runs the
    data table's search again, and this again (it is idempotent).
    """
    name = identifier(table_identifier)
    new = rows(staged, str(batch.batch_id), dt.datetime.now(dt.UTC))
    stale = sorted(str(b) for b in batch.all_batch_ids - {batch.batch_id})
    with tables.iceberg_errors(name):
        if table is None:
            if new is None:
                return 0  # no table: no earlier attempt left rows either
            table = tables.create_table(catalog, name, SCHEMA)
            if table.metadata.snapshots:
                raise CommitConflictError(f"{name} was created and written meanwhile")  # search again
        table = tables.ensure_icefloe_properties(table)
        if tables.snapshots_with_batches(table, {batch.batch_id}, since_ms):
            return 0  # this batch's quarantine commit landed already (an unknown outcome, retried)
        if new is None and not stale and not replaced:
            return 0
        return _replace_rows(table, new, stale, replaced, properties)


def _replace_rows(
    table: Table, new: pa.Table | None, stale: list[str], replaced: Sequence[str], properties: dict[str, str]
) -> int:
    """One transaction: delete stale and replaced rows, append ``new``."""
    from pyiceberg.expressions import In, Or

    tx = table.transaction()
    conditions = [In("_batch_id", stale)] if stale else []  # type: ignore[call-arg, arg-type]
    if replaced:
        conditions.append(In("_source_file", list(replaced)))  # type: ignore[call-arg, arg-type]
    if conditions:
        condition = conditions[0] if len(conditions) == 1 else Or(conditions[0], conditions[1])
        with warnings.catch_warnings():
            # The usual case: no earlier attempt left rows.
            warnings.filterwarnings("ignore", "Delete operation did not match any records", UserWarning)
            tx.delete(condition, snapshot_properties=properties)
    if new is not None:
        with tx.update_snapshot(snapshot_properties=properties).fast_append() as append:
            for data_file in tables.write_data_files(table, new, SCHEMA):
                append.append_data_file(data_file)
    before = len(table.metadata.snapshots)
    committed = tx.commit_transaction()
    return len(committed.metadata.snapshots) - before
