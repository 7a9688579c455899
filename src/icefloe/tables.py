"""The Iceberg boundary: the catalog, creating and evolving tables, writing data files.

pyiceberg's errors are translated here. Tables icefloe writes carry
``commit.retry.num-retries=0``: pyiceberg's own commit retry rebuilds a failed commit on the new
table head without checking whether our batch already landed, which would break exactly-once;
icefloe retries in its own loop (:mod:`icefloe.commit`) after that check instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import itertools
import logging
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa
from pyarrow.fs import AwsStandardS3RetryStrategy
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
)

from icefloe import evolution
from icefloe.errors import (
    CommitConflictError,
    CommitError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    SchemaRaceError,
)
from icefloe.identifiers import split_identifier
from icefloe.ledger.connection import translate_connection_errors
from icefloe.settings import Settings

if TYPE_CHECKING:  # pyiceberg's catalog/table modules take seconds to import: only where used
    from pyiceberg.catalog import Catalog
    from pyiceberg.manifest import DataFile
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

DEFAULT_CATALOG_NAME = "icefloe"
WAREHOUSE_ATTEMPTS = 10
# Properties icefloe sets on the tables it writes (and enforces before each commit).
TABLE_PROPERTIES = {
    "commit.retry.num-retries": "0",
    # In-memory Arrow bytes per data file: bounds the writer's buffer (~30-60 MB of Parquet).
    "write.target-file-size-bytes": str(128 << 20),
    "write.parquet.compression-codec": "zstd",
    # Exact bounds of _source_file (not truncated to 16 characters): a data file holding one source
    # file's rows then matches a replace's delete strictly, and is dropped without being read.
    "write.metadata.metrics.column._source_file": "full",
}


def load(settings: Settings, database_url: str) -> Catalog:
    """The catalog named by ``settings.catalog_name`` (configured the pyiceberg way), else the
    default: a SQL catalog in the ledger database, warehouse ``settings.warehouse``.
    """
    from pyiceberg.catalog import load_catalog
    from pyiceberg.catalog.sql import SqlCatalog

    try:
        if settings.catalog_name:
            return load_catalog(settings.catalog_name)
        warehouse = settings.warehouse
        # pool_pre_ping: a pooled connection killed by a PostgreSQL restart is replaced, not used.
        props: dict[str, str] = {"uri": database_url, "warehouse": warehouse, "pool_pre_ping": "true"}
        if warehouse.startswith("s3://"):
            # A default catalog with an S3 warehouse reuses the sources' S3 settings.
            s3 = settings.s3
            s3_props = {
                "s3.endpoint": s3.endpoint_url,
                "s3.access-key-id": s3.access_key_id,
                "s3.secret-access-key": s3.secret_access_key,
                "s3.session-token": s3.session_token,
                "s3.region": s3.region,
            }
            props.update({k: v for k, v in s3_props.items() if v})
            # pyarrow's S3 client gives up after 3 s without progress; a busy store stalls longer.
            props.setdefault("s3.connect-timeout", "10")
            props.setdefault("s3.request-timeout", "60")
            # and after 3 attempts: a throttling warehouse (503 SlowDown) would fail the run.
            props.setdefault("s3.retry-strategy-impl", "icefloe.tables.WarehouseRetryStrategy")
        else:
            os.makedirs(settings.home / "warehouse", exist_ok=True)
        # pyiceberg creates its catalog tables on first use with check-then-create, which races when
        # several workers start on a fresh database: serialise that moment on an advisory lock.
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        lock_engine = create_engine(database_url, poolclass=NullPool)
        try:
            with lock_engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(hashtextextended('icefloe:catalog-init', 0))"))
                try:
                    catalog = SqlCatalog(DEFAULT_CATALOG_NAME, **props)
                    # The catalog lives in the ledger's database: its outages are the ledger's.
                    translate_connection_errors(catalog.engine)
                    return catalog
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(hashtextextended('icefloe:catalog-init', 0))"))
        finally:
            lock_engine.dispose()
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"cannot load the Iceberg catalog: {exc}") from exc


class WarehouseRetryStrategy(AwsStandardS3RetryStrategy):  # type: ignore[misc]  # pyarrow: untyped
    """Retries of warehouse requests (data files, metadata): the AWS SDK's standard strategy —
    throttling and 5xx retried with exponential backoff and jitter — with 10 attempts instead of 3,
    so that a store answering a few percent of requests ``503 SlowDown`` (as S3 does under load)
    slows a run down instead of failing it. Named in the catalog property ``s3.retry-strategy-impl``
    (set by default for an ``s3://`` ``ICEFLOE_WAREHOUSE``; set it on your own catalog likewise)."""

    def __init__(self) -> None:
        super().__init__(max_attempts=WAREHOUSE_ATTEMPTS)


def load_table(catalog: Catalog, identifier: str) -> Table | None:
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        return None


def create_table(catalog: Catalog, identifier: str, arrow_schema: pa.Schema) -> Table:
    """Create namespace and table if missing; a concurrent creator wins harmlessly.

    Catalogs do not all report a lost creation race the same way (pyiceberg's SQL catalog lets a
    unique-key violation through), so after any failure we look: there now → fine; else re-raise.
    """
    namespace, _ = split_identifier(identifier)
    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass
    except Exception:
        try:
            catalog.load_namespace_properties(namespace)
        except NoSuchNamespaceError:
            raise
    try:
        return catalog.create_table(identifier, schema=arrow_schema, properties=TABLE_PROPERTIES)
    except Exception:
        existing = load_table(catalog, identifier)
        if existing is None:
            raise
        return existing


def ensure_icefloe_properties(table: Table) -> Table:
    """Make sure pyiceberg's blind commit retry is off on ``table`` (tables not created by icefloe),
    and the _source_file bounds exact (tables created by earlier versions)."""
    wanted = {
        k: TABLE_PROPERTIES[k] for k in ("commit.retry.num-retries", "write.metadata.metrics.column._source_file")
    }
    missing = {k: v for k, v in wanted.items() if table.properties.get(k) != v}
    if not missing:
        return table
    with table.transaction() as tx:
        tx.set_properties(missing)
    return table.refresh()


def add_columns(table: Table, columns: pa.Schema) -> Table:
    """Evolve the table with new optional columns and widened types (metadata only, a commit of its
    own; retried on conflicts)."""
    for _ in range(10):
        try:
            with table.update_schema() as update:
                update.union_by_name(columns)
            return table.refresh()
        except CommitFailedException:
            table = table.refresh()
    raise CommitConflictError(f"could not add columns {columns.names} to {table.name()}: too many conflicts")


# Record batches smaller than this on average are combined before a write (see write_data_files).
SMALL_BATCH_BYTES = 256 << 10


def write_data_files(
    table: Table, data: pa.Table | Iterable[pa.RecordBatch], schema: pa.Schema, *, chunk_bytes: int | None = None
) -> Iterator[DataFile]:
    """Write Parquet data files under the table location without committing them.

    Batches are written one target-sized chunk at a time, so memory stays bounded whatever the
    input size. (pyiceberg's own streaming path hands every chunk to an executor at once, which
    reads the whole input before the first file is written.) ``chunk_bytes`` (default: the table's
    target file size) bounds the Arrow bytes held. A chunk is written on a thread while the next
    one is gathered (parsing a large file goes on during the Parquet write: the write was half of
    a 1 GB CSV's time on the critical path), so writing holds about three chunks at most.
    Files of a chunk written when the caller stops early are deleted.
    """
    from pyiceberg.io.pyarrow import _dataframe_to_data_files  # heavy import: only when writing

    if isinstance(data, pa.Table):
        data = data.to_batches()
    target = chunk_bytes or int(
        table.properties.get("write.target-file-size-bytes", TABLE_PROPERTIES["write.target-file-size-bytes"])
    )
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    chunk: list[pa.RecordBatch] = []
    size = 0

    def write(batches: list[pa.RecordBatch]) -> list[DataFile]:
        df = pa.Table.from_batches(batches, schema=schema)
        if len(batches) > 1 and df.nbytes < len(batches) * SMALL_BATCH_BYTES:
            # pyiceberg projects each record batch onto the table schema in Python (~0.3 ms): the
            # rows of 1,000 small files cost 0.3 s of the GIL as 1,000 batches, nothing as one.
            df = df.combine_chunks()
        return list(
            _dataframe_to_data_files(
                table_metadata=table.metadata,
                df=df,
                io=table.io,
                write_uuid=write_uuid,
                counter=counter,
            )
        )

    writer: ThreadPoolExecutor | None = None
    pending: Future[list[DataFile]] | None = None
    try:
        for batch in data:
            if batch.num_rows == 0:
                continue
            chunk.append(batch)
            size += batch.nbytes
            if size >= target:
                if pending is not None:
                    done, pending = pending.result(), None
                    yield from done
                writer = writer or ThreadPoolExecutor(1, thread_name_prefix="icefloe-write-chunk")
                pending = writer.submit(contextvars.copy_context().run, write, chunk)
                chunk, size = [], 0
        if pending is not None:
            done, pending = pending.result(), None
            yield from done
        if chunk:
            yield from write(chunk)
    finally:
        if pending is not None:  # stopped early (an error, or the caller closed us): nothing of it is kept
            with contextlib.suppress(Exception):
                delete_data_files(table, pending.result())
        if writer is not None:
            writer.shutdown(wait=True)


def delete_data_files(table: Table, files: Iterable[DataFile]) -> None:
    """Best-effort removal of data files that will never be committed."""
    delete_paths(table, [f.file_path for f in files])


def delete_paths(table: Table, paths: Iterable[str]) -> None:
    """Best-effort removal of files under the table location that will never be committed."""
    for path in paths:
        with contextlib.suppress(Exception):  # orphans are harmless; maintenance removes them
            table.io.delete(path)


@contextlib.contextmanager
def iceberg_errors(identifier: str) -> Iterator[None]:
    """pyiceberg's commit-path errors as icefloe's: a moved head is a conflict (search again, retry);
    an unknown state or an I/O error (the warehouse, the catalog's store) may have landed."""
    try:
        yield
    except CommitFailedException as exc:
        raise CommitConflictError(f"{identifier}: {exc}") from exc
    except (CommitStateUnknownException, OSError) as exc:
        raise CommitOutcomeUnknownError(f"{identifier}: {type(exc).__name__}: {exc}") from exc


class RowsCommitted(NamedTuple):
    snapshot_id: int
    snapshots: int  # snapshots added (delete + append under replace)
    schema_id: int  # the table's schema id after the commit


def commit_rows(
    table: Table,
    properties: dict[str, str],
    replaced: Sequence[str],
    *,
    data_files: Sequence[DataFile] = (),
    parquet_paths: Sequence[str] = (),
    evolve_to: Schema | None = None,
) -> RowsCommitted:
    """The one Iceberg transaction of a batch, for every engine: evolve the schema to ``evolve_to``
    (the schema the data files were written for: new columns, widened types), delete the rows of
    the replaced files' earlier versions (``_source_file`` in ``replaced``) and append the batch's
    data files (written by pyiceberg) or Parquet files (written by another engine), all with
    ``properties`` in the snapshot summaries.

    A compare-and-swap on the table head that was loaded (and searched) before: if anything
    committed in between, this fails with :class:`CommitConflictError` and nothing lands. If the
    head's schema gives a column of ``evolve_to`` another field id (another writer added other
    columns since the files were written), :class:`SchemaRaceError`: the batch must be read again.
    """
    from pyiceberg.expressions import In
    from pyiceberg.schema import index_by_name

    from icefloe.schema import SOURCE_FILE_COLUMN

    with iceberg_errors(".".join(table.name())):
        tx = table.transaction()
        snapshots = 0
        if evolve_to is not None:
            with tx.update_schema() as update:
                update.union_by_name(evolve_to)
            written, head = index_by_name(evolve_to), index_by_name(tx.table_metadata.schema())
            moved = evolution.moved_field(written, head)
            if moved is not None:
                raise SchemaRaceError(
                    f"{'.'.join(table.name())}: column {moved!r} has field id {head.get(moved)} on the table, "
                    f"{written[moved]} in the staged files (the schema changed meanwhile); the batch is read again"
                )
        if replaced:
            # pyiceberg's pydantic-based In() confuses mypy; the call is its documented form.
            with warnings.catch_warnings():
                # An earlier version that failed left no rows: nothing to delete is fine.
                warnings.filterwarnings("ignore", "Delete operation did not match any records", UserWarning)
                tx.delete(In(SOURCE_FILE_COLUMN, list(replaced)), snapshot_properties=properties)  # type: ignore[call-arg, arg-type]
            snapshots += 1
        if data_files:
            with tx.update_snapshot(snapshot_properties=properties).fast_append() as append:
                for data_file in data_files:
                    append.append_data_file(data_file)
            snapshots += 1
        if parquet_paths:
            tx.add_files(list(parquet_paths), snapshot_properties=properties, check_duplicate_files=False)
            snapshots += 1
        committed = tx.commit_transaction()
    current = committed.current_snapshot()
    if current is None:
        raise CommitError(f"{'.'.join(table.name())}: the commit left no current snapshot")
    return RowsCommitted(current.snapshot_id, snapshots, committed.schema().schema_id)


def snapshot_properties(batch_id: uuid.UUID, run_id: int | None, file_count: int) -> dict[str, str]:
    """The summary properties every icefloe snapshot carries."""
    return {
        "icefloe.batch-id": str(batch_id),
        "icefloe.run-id": "" if run_id is None else str(run_id),
        "icefloe.file-count": str(file_count),
    }


def _batch_snapshots(table: Table, batch_ids: set[str], since_ms: int) -> Iterator[tuple[str, Any]]:
    """(batch id, snapshot) for the snapshots since ``since_ms`` whose summary carries one of ``batch_ids``."""
    for snap in table.metadata.snapshots:
        if snap.timestamp_ms < since_ms or snap.summary is None:
            continue
        bid = snap.summary.additional_properties.get("icefloe.batch-id")
        if bid in batch_ids:
            yield bid, snap


def snapshots_with_batches(table: Table, batch_ids: set[uuid.UUID], since_ms: int) -> dict[uuid.UUID, int]:
    """Batch id → snapshot id, for the snapshots since ``since_ms`` that carry one of ``batch_ids``."""
    return {
        uuid.UUID(bid): snap.snapshot_id for bid, snap in _batch_snapshots(table, {str(b) for b in batch_ids}, since_ms)
    }


def count_batch_snapshots(table: Table, batch_id: uuid.UUID, since_ms: int) -> int:
    """How many snapshots since ``since_ms`` carry ``batch_id`` (one, or delete + append under replace)."""
    return sum(1 for _ in _batch_snapshots(table, {str(batch_id)}, since_ms))


def describe(table: Table) -> dict[str, Any]:
    """A small summary for `ingestion show` and the demo."""
    snap = table.current_snapshot()
    return {
        "table": ".".join(table.name()),
        "location": table.location(),
        "snapshots": len(table.metadata.snapshots),
        "current_snapshot_id": snap.snapshot_id if snap else None,
    }


ICEFLOE_COLUMNS = ("_source_file", "_ingested_at")  # every row: the object it came from, when its batch landed
SMALL_FILE_FRACTION = 4  # a data file under 1/4 of write.target-file-size-bytes counts as small


def summary(table: Table) -> dict[str, Any]:
    """What `icefloe table show` prints: schema, rows, data files and their sizes, snapshots, location."""
    snap = table.current_snapshot()
    props = snap.summary.additional_properties if snap is not None and snap.summary is not None else {}
    target = int(table.properties.get("write.target-file-size-bytes", TABLE_PROPERTIES["write.target-file-size-bytes"]))
    sizes = [task.file.file_size_in_bytes for task in table.scan().plan_files()] if snap is not None else []
    small = target // SMALL_FILE_FRACTION
    snapshots = []
    for s in table.metadata.snapshots:
        extra = s.summary.additional_properties if s.summary is not None else {}
        snapshots.append(
            {
                "snapshot_id": s.snapshot_id,
                "committed_at": dt.datetime.fromtimestamp(s.timestamp_ms / 1000, dt.UTC),
                "operation": s.summary.operation.value if s.summary is not None else None,
                "added_records": _int(extra.get("added-records")),
                "deleted_records": _int(extra.get("deleted-records")),
                "batch_id": extra.get("icefloe.batch-id"),
                "run_id": _int(extra.get("icefloe.run-id")),
                "file_count": _int(extra.get("icefloe.file-count")),
            }
        )
    return {
        "table": ".".join(table.name()),
        "location": table.location(),
        "metadata_location": table.metadata_location,
        "rows": _int(props.get("total-records")) or 0,
        "data_files": len(sizes),
        "data_bytes": sum(sizes),
        "average_file_bytes": sum(sizes) // len(sizes) if sizes else 0,
        "small_files": sum(1 for size in sizes if size < small),
        "small_file_threshold_bytes": small,
        "current_snapshot_id": snap.snapshot_id if snap else None,
        "columns": [
            {
                "id": field.field_id,
                "name": field.name,
                "type": str(field.field_type),
                "required": field.required,
                "added_by_icefloe": field.name in ICEFLOE_COLUMNS,
            }
            for field in table.schema().fields
        ],
        "snapshots": snapshots,
        "properties": dict(table.properties),
    }


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None
