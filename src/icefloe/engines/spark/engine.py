"""The Spark engine: a batch read in one Spark job, written with ``writeTo(...).append()``.

Staging (outside any lock):

1. the batch's objects are read in one DataFrame (``s3://`` mapped to ``s3a://``), with the
   ingestion's schema or Spark's inference, CSV/JSON/Parquet options and compression by
   extension; ``_source_file`` comes from Spark's file metadata (mapped back to ``s3://``) and
   ``_ingested_at`` is the batch's one timestamp. Text is read in FAILFAST mode, so a malformed
   record fails the job instead of becoming a null;
2. the rows are conformed to the table's schema (created, or evolved with new columns, through
   pyiceberg exactly as the arrow engine does; casts are ANSI: a value that does not fit fails);
3. the conformed DataFrame is cached and counted per file: one job that parses and converts
   every row. When it fails, the batch is bisected until the bad files are known; they are FAILED
   with Spark's error in one line, the others go on. A file whose size differs from the listed
   one changed after listing and goes back to discovery.

Commit (called by :mod:`icefloe.commit` under the per-table lock, after fencing and the snapshot
search): ``df.writeTo(catalog.ns.table).option("snapshot-property.icefloe.batch-id", …)`` (and
run id, file count) ``.append()`` from the cache; the snapshot carrying the batch id is then
looked up with pyiceberg. The table has ``commit.retry.num-retries=0``, which Java Iceberg
honours too: Spark does not retry a conflicting commit on its own; a conflict comes back here as
pyiceberg's ``CommitFailedException`` and icefloe's loop searches and retries.

``--on-change replace`` for batches holding a new version of a file: the rows of the previous
version must go in the *same* commit. Spark's own ways are not usable: ``overwrite(condition)``
only drops whole data files (and fails on files mixing sources), and SQL ``DELETE``/``MERGE``
cannot carry the snapshot properties. So such a batch is written by Spark as plain Parquet files
under the table's data folder and committed by pyiceberg in one transaction (delete of the old
rows + append of those files, with the batch's snapshot properties), exactly as the arrow engine
commits: one atomic step, same reconciliation.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.expressions import In
from pyiceberg.table import Table

from icefloe import tables
from icefloe.engines import StagedBatch
from icefloe.engines.spark.session import SparkTarget, one_line
from icefloe.errors import CommitError, ConfigurationError, IcefloeError, LeaseLostError, PermanentFileError
from icefloe.ledger import Batch, ClaimedFile, FileOutcome
from icefloe.schema import (
    INGESTED_AT_COLUMN,
    SOURCE_FILE_COLUMN,
    arrow_target,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from icefloe.models import Ingestion
    from icefloe.runtime import Runtime

log = logging.getLogger(__name__)

SIZE_COLUMN = "__icefloe_file_size"
_GLOB_CHARS = "\\*?[]{}"
_INFRASTRUCTURE_HINTS = (
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.CANCELLED",
    "failed to connect",
    "Connection refused",
    "Socket closed",
    "RetriesExceeded",
    "INVALID_HANDLE",
    "java.lang.OutOfMemoryError",
    "SparkContext was shut down",
    "SparkContext has been shutdown",
)


class SparkInfrastructureError(IcefloeError):
    """Spark itself (server, connection, memory) failed: not the fault of any one file."""

    error_type = "SparkError"


@dataclass(frozen=True)
class SparkReadOptions:
    """How an ingestion's files are parsed (the Spark side of :class:`icefloe.formats.ReadOptions`)."""

    format: str
    schema: pa.Schema | None = None
    csv_delimiter: str = ","
    csv_quote_char: str = '"'
    csv_header: bool = True


@dataclass
class _Part:
    """A group of files read and validated together."""

    files: list[ClaimedFile]
    df: DataFrame
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # uri -> (records, size)


def _is_infrastructure(exc: BaseException) -> bool:
    name = type(exc).__name__
    if name in ("RetriesExceeded", "SparkConnectException") or "grpc" in type(exc).__module__:
        return True
    text = str(exc)
    return any(h in text for h in _INFRASTRUCTURE_HINTS)


def _error_type(message: str, fmt: str) -> str:
    lower = message.lower()
    if "malformed" in lower or "failfast" in lower:
        return {"csv": "MalformedCSV", "jsonl": "MalformedJSON"}.get(fmt, "CorruptFile")
    if "header does not conform" in lower or "csv header" in lower:
        return "MalformedCSV"
    if "cast" in lower or "overflow" in lower or "cannot parse" in lower or "cannot_parse" in lower:
        return "SchemaMismatch"
    if "utf" in lower or "encoding" in lower:
        return "EncodingError"
    if any(h in lower for h in ("parquet", "magic", "gzip", "zlib", "eof", "compress", "footer", "codec")):
        return "CorruptFile"
    return "UnreadableFile"


class SparkEngine:
    """Stages batches on a Spark Connect server. One instance per ingestion run."""

    def __init__(
        self,
        *,
        target: SparkTarget,
        catalog: Catalog,
        table_identifier: str,
        options: SparkReadOptions,
        infer_schema: bool,
        replace_changed: bool,
        spark_factory: Callable[[SparkTarget], SparkSession] | None = None,
    ) -> None:
        from icefloe.engines.spark import session as sessions

        self.target = target
        self.catalog = catalog
        self.table_identifier = table_identifier
        self.options = options
        self.destination = tables.TableDestination(catalog, table_identifier, options.schema, infer_schema)
        self.replace_changed = replace_changed
        self._spark_factory = spark_factory or sessions.session
        self._spark: SparkSession | None = None
        self._cached: list[DataFrame] = []

    # ------------------------------------------------------------------ plumbing

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            self._spark = self._spark_factory(self.target)
        return self._spark

    @property
    def spark_table(self) -> str:
        namespace, name = tables.split_identifier(self.table_identifier)
        parts = [self.target.catalog_name, *namespace.split("."), name]
        return ".".join(f"`{p}`" for p in parts)

    def spark_uri(self, uri: str) -> str:
        """``s3://b/k`` → ``s3a://b/k``, glob characters escaped (Spark globs its load paths)."""
        rest = uri.removeprefix("s3://")
        escaped = "".join("\\" + c if c in _GLOB_CHARS else c for c in rest)
        return f"{self.target.scheme}://{escaped}"

    def _ledger_uri(self, spark_path: str) -> str:
        """Spark's ``_metadata.file_path`` (URL-encoded, s3a://) → the ledger's ``s3://`` URI."""
        scheme, sep, rest = spark_path.partition("://")
        return f"s3://{unquote(rest)}" if sep and scheme in ("s3a", "s3", "s3n") else unquote(spark_path)

    def _release_cache(self) -> None:
        for df in self._cached:
            try:
                df.unpersist()
            except Exception as exc:  # the session may be gone; the server forgets it on its own
                log.debug("unpersist failed: %s", exc)
        self._cached.clear()

    # ------------------------------------------------------------------ reading

    def _reader(self, files: list[ClaimedFile]) -> DataFrame:
        from pyspark.sql.pandas.types import from_arrow_schema

        reader = self.spark.read.format({"jsonl": "json"}.get(self.options.format, self.options.format))
        opts: dict[str, str] = {}
        schema = self.options.schema
        if self.options.format == "csv":
            opts.update(
                sep=self.options.csv_delimiter,
                quote=self.options.csv_quote_char,
                escape=self.options.csv_quote_char,
                header=str(self.options.csv_header).lower(),
                mode="FAILFAST",
                encoding="UTF-8",
                multiLine="false",
            )
            if self.options.csv_header:
                # By header name, as the arrow engine: read text, convert in conform().
                opts.update(inferSchema=str(schema is None).lower(), enforceSchema="false")
                schema = None
            else:
                opts["inferSchema"] = str(schema is None).lower()
        elif self.options.format == "jsonl":
            opts.update(mode="FAILFAST", encoding="UTF-8", multiLine="false")
        elif self.options.format == "parquet" and schema is None:
            opts["mergeSchema"] = "true"
        if schema is not None:
            reader = reader.schema(from_arrow_schema(schema, prefer_timestamp_ntz=True))
        return reader.options(**opts).load([self.spark_uri(f.file_path) for f in files])

    def _source_file_column(self, df: DataFrame) -> Any:
        from pyspark.sql import functions as F

        # s3a://bucket/key (URL-encoded) → s3://bucket/key: the ledger's URI for ordinary keys;
        # keys with characters Spark encodes are mapped by the exact table below.
        path = F.col("_metadata.file_path")
        return F.regexp_replace(path, f"^{self.target.scheme}://", "s3://")

    def _conformed(self, raw: DataFrame, table: Table, ingested_at: dt.datetime, exact: dict[str, str]) -> DataFrame:
        """``raw`` cast to the table's columns, with the metadata columns and the file size."""
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import from_arrow_type

        present = set(raw.columns)
        source = self._source_file_column(raw)
        if exact:
            mapping = F.create_map(*[F.lit(x) for pair in exact.items() for x in pair])
            source = F.coalesce(mapping[F.col("_metadata.file_path")], source)
        columns = []
        for fld in arrow_target(table):
            try:
                spark_type = from_arrow_type(fld.type, prefer_timestamp_ntz=True)
            except Exception as exc:
                raise ConfigurationError(
                    f"column {fld.name!r} of {self.table_identifier} has a type ({fld.type}) the Spark "
                    "engine cannot write"
                ) from exc
            if fld.name == SOURCE_FILE_COLUMN:
                columns.append(source.alias(fld.name))
            elif fld.name == INGESTED_AT_COLUMN:
                columns.append(F.lit(ingested_at).cast(spark_type).alias(fld.name))
            elif fld.name in present:
                columns.append(F.col(f"`{fld.name}`").cast(spark_type).alias(fld.name))
            else:
                columns.append(F.lit(None).cast(spark_type).alias(fld.name))
        columns.append(F.col("_metadata.file_size").alias(SIZE_COLUMN))
        return raw.select(*columns)

    def _try(
        self, files: list[ClaimedFile], staged: StagedBatch, ingested_at: dt.datetime, exact: dict[str, str]
    ) -> _Part:
        """Read, conform, cache and count ``files`` (raises what Spark raised)."""
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import to_arrow_schema

        raw = self._reader(files)
        data_schema = to_arrow_schema(raw.schema, timestamp_utc=True)
        table = self.destination.table_for(staged.table, data_schema)
        staged.table = table
        df = self._conformed(raw, table, ingested_at, exact).cache()
        self._cached.append(df)
        rows = df.groupBy(SOURCE_FILE_COLUMN, SIZE_COLUMN).agg(F.count(F.lit(1)).alias("n")).collect()
        part = _Part(files, df)
        for row in rows:
            part.counts[row[SOURCE_FILE_COLUMN]] = (int(row["n"]), int(row[SIZE_COLUMN]))
        return part

    def _validate(
        self,
        files: list[ClaimedFile],
        staged: StagedBatch,
        ingested_at: dt.datetime,
        exact: dict[str, str],
        cancelled: threading.Event,
        batch: Batch,
    ) -> list[_Part]:
        """Parts of ``files`` that read cleanly; bad files go to ``staged.failed`` (bisection)."""
        if cancelled.is_set():
            raise LeaseLostError(f"lease on batch {batch.batch_id} lost")
        started = time.monotonic()
        try:
            return [self._try(files, staged, ingested_at, exact)]
        except Exception as exc:
            if not type(exc).__module__.startswith("pyspark"):
                raise  # the catalog, the ledger, icefloe itself: not the fault of a file
            if _is_infrastructure(exc):
                raise SparkInfrastructureError(f"Spark failed on batch {batch.batch_id}: {one_line(exc)}") from exc
            if len(files) == 1:
                file = files[0]
                message = one_line(exc)
                error = PermanentFileError(
                    f"{file.file_path}: {message}", error_type=_error_type(message, self.options.format)
                )
                log.warning("file failed: %s", error, extra={"file_path": file.file_path})
                ms = int((time.monotonic() - started) * 1000)
                staged.failed.append((file, error, 0, ms))
                return []
            log.info("batch %s: a job over %d files failed; bisecting", batch.batch_id, len(files))
            half = len(files) // 2
            return self._validate(files[:half], staged, ingested_at, exact, cancelled, batch) + self._validate(
                files[half:], staged, ingested_at, exact, cancelled, batch
            )

    # ------------------------------------------------------------------ staging

    def stage(self, batch: Batch, cancelled: threading.Event) -> StagedBatch:
        self._release_cache()  # the previous batch is committed (or abandoned) by now
        staged = StagedBatch()
        started = time.monotonic()
        ingested_at = dt.datetime.now(dt.UTC)
        files = list(batch.files)
        exact = self._exact_paths(files)
        parts = self._validate(files, staged, ingested_at, exact, cancelled, batch)
        if cancelled.is_set():
            raise LeaseLostError(f"lease on batch {batch.batch_id} lost")
        ms = int((time.monotonic() - started) * 1000) // max(1, len(files))
        counts: dict[str, tuple[int, int]] = {}
        for part in parts:
            counts.update(part.counts)
        good_parts: list[_Part] = []
        for part in parts:
            kept = []
            for file in part.files:
                records, size = counts.get(file.file_path, (0, file.size))
                if size != file.size:
                    # Spark read another version than the one listed: rediscover it.
                    staged.changed.append(file)
                    continue
                kept.append(file)
                staged.succeeded.append(FileOutcome(file, records, file.size, ms))
            if kept:
                good_parts.append(_Part(kept, part.df, part.counts))
        changed = {f.file_path for f in staged.changed}
        if changed:
            # Rows of a changed object must not be committed with this batch.
            good_parts = [self._without(p, changed) for p in good_parts]
        replaced = self.replace_changed and any(o.file.version > 1 for o in staged.succeeded)
        if staged.records == 0 and not replaced:
            return staged  # nothing to write: commit.py marks the files without a snapshot
        staged.commit = self._committer(batch, good_parts, replaced)
        return staged

    @staticmethod
    def _without(part: _Part, paths: set[str]) -> _Part:
        from pyspark.sql import functions as F

        return _Part(part.files, part.df.where(~F.col(SOURCE_FILE_COLUMN).isin(sorted(paths))), part.counts)

    def _exact_paths(self, files: list[ClaimedFile]) -> dict[str, str]:
        """Spark's encoded path → ledger URI, for keys the plain scheme swap would not restore."""
        from urllib.parse import quote

        exact: dict[str, str] = {}
        for f in files:
            key = f.file_path.removeprefix("s3://")
            encoded = quote(key, safe="/:@!$&'()*+,;=-._~")
            if encoded != key:
                exact[f"{self.target.scheme}://{encoded}"] = f.file_path
        return exact

    # ------------------------------------------------------------------ commit

    def _final(self, parts: list[_Part]) -> DataFrame:
        df = parts[0].df
        for part in parts[1:]:
            df = df.unionByName(part.df)
        return df.drop(SIZE_COLUMN)

    def _committer(
        self, batch: Batch, parts: list[_Part], replace: bool
    ) -> Callable[[Table, dict[str, str], list[str]], tuple[int, int]]:
        staged_files: list[str] = []

        def commit(table: Table, props: dict[str, str], replaced: list[str]) -> tuple[int, int]:
            if replaced or replace:
                return self._commit_replace(table, batch, parts, props, replaced, staged_files)
            return self._commit_append(table, batch, parts, props)

        return commit

    def _commit_append(self, table: Table, batch: Batch, parts: list[_Part], props: dict[str, str]) -> tuple[int, int]:
        searched = table.current_snapshot()
        writer = self._final(parts).writeTo(self.spark_table)
        for key, value in props.items():
            writer = writer.option(f"snapshot-property.{key}", value)
        try:
            writer.append()
        except Exception as exc:
            _raise_commit_error(exc, self.table_identifier)
        after = self.catalog.load_table(self.table_identifier)
        found = tables.snapshots_with_batches(after, {batch.batch_id}, 0)
        if batch.batch_id not in found:
            # Not "unknown": retrying could append twice. The lease expires and reconciliation
            # decides from the snapshots.
            raise CommitError(
                f"Spark's append to {self.table_identifier} returned but no snapshot carries batch {batch.batch_id}"
            )
        snapshot_id = found[batch.batch_id]
        ours = after.snapshot_by_id(snapshot_id)
        expected_parent = searched.snapshot_id if searched is not None else None
        if ours is not None and ours.parent_snapshot_id != expected_parent:
            # Spark committed on a newer head than the one icefloe searched (another writer
            # committed in between; icefloe's own writers are held off by the table lock).
            log.warning(
                "batch %s committed on snapshot %s, not on the searched head %s",
                batch.batch_id,
                ours.parent_snapshot_id,
                expected_parent,
            )
        return snapshot_id, 1

    def _commit_replace(
        self,
        table: Table,
        batch: Batch,
        parts: list[_Part],
        props: dict[str, str],
        replaced: list[str],
        staged_files: list[str],
    ) -> tuple[int, int]:
        """Spark writes Parquet under the table's data folder; pyiceberg commits delete + append."""
        from pyspark.sql import functions as F

        if not staged_files and any(p.counts for p in parts):
            folder = f"{table.location().rstrip('/')}/data/icefloe-staged/{batch.batch_id}-{uuid.uuid4().hex[:8]}"
            spark_folder = self.spark_uri(folder)
            try:
                df = self._final(parts)
                df.write.mode("error").option("compression", "zstd").parquet(spark_folder)
                written = self.spark.read.parquet(spark_folder).select(F.col("_metadata.file_path")).distinct()
                staged_files.extend(sorted(self._ledger_uri(r[0]) for r in written.collect()))
            except Exception as exc:
                if _is_infrastructure(exc):
                    raise CommitError(f"Spark failed writing batch {batch.batch_id}: {one_line(exc)}") from exc
                raise CommitError(f"Spark could not write batch {batch.batch_id}: {one_line(exc)}") from exc
        tx = table.transaction()
        snapshots = 0
        if replaced:
            tx.delete(In(SOURCE_FILE_COLUMN, replaced), snapshot_properties=props)  # type: ignore[call-arg, arg-type]
            snapshots += 1
        if staged_files:
            tx.add_files(staged_files, snapshot_properties=props, check_duplicate_files=False)
            snapshots += 1
        committed = tx.commit_transaction()
        current = committed.current_snapshot()
        assert current is not None
        return current.snapshot_id, snapshots


def _raise_commit_error(exc: Exception, table_identifier: str) -> None:
    """Spark's failure of a commit, as the exceptions :mod:`icefloe.commit` acts on."""
    text = str(exc)
    if "CommitFailedException" in text or "Cannot commit" in text:
        raise CommitFailedException(f"{table_identifier}: {one_line(exc)}") from exc
    if "CommitStateUnknownException" in text or _is_infrastructure(exc):
        # Maybe committed: icefloe's next attempt searches the snapshots.
        raise CommitStateUnknownException(f"{table_identifier}: {one_line(exc)}") from exc
    raise CommitError(f"Spark could not write to {table_identifier}: {one_line(exc)}") from exc


def make_spark_engine(rt: Runtime, ingestion: Ingestion) -> SparkEngine:
    """The Spark engine for ``ingestion`` (called by :func:`icefloe.worker.make_engine`)."""
    from icefloe.engines.spark import require_client
    from icefloe.engines.spark.session import target_for
    from icefloe.schema import user_arrow_schema

    require_client()
    target = target_for(rt.catalog, rt.settings, ingestion.spark_remote)
    return SparkEngine(
        target=target,
        catalog=rt.catalog,
        table_identifier=ingestion.table_identifier,
        options=SparkReadOptions(
            format=ingestion.format,
            schema=user_arrow_schema(ingestion.schema) if ingestion.schema else None,
            csv_delimiter=ingestion.csv_delimiter,
            csv_quote_char=ingestion.csv_quote_char,
            csv_header=ingestion.csv_header,
        ),
        infer_schema=ingestion.schema is None,
        replace_changed=ingestion.on_change == "replace",
    )


__all__ = ["SparkEngine", "SparkInfrastructureError", "SparkReadOptions", "make_spark_engine"]
