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

4. the batch's rows (all parts that read cleanly) are written by Spark as Parquet files under
   the table's data folder — still outside the lock, nothing committed.

Commit (:meth:`SparkEngine.commit`, called by :mod:`icefloe.commit` under the per-table lock,
after fencing and the snapshot search): pyiceberg adds those Parquet files — and under
``--on-change replace`` deletes the previous versions' rows — in one transaction carrying the
batch's snapshot properties, exactly as the arrow engine commits (:func:`icefloe.tables.commit_rows`).

Why not Spark's own ``writeTo(...).append()``: Java Iceberg commits an append on whatever head it
loads when the write ends, not on the head icefloe searched under the lock, so a worker frozen in
the commit window (whose lock PostgreSQL has taken away) could append a batch that another worker
has committed meanwhile. pyiceberg's commit is a compare-and-swap on the searched head, which keeps
every commit exactly once without relying on the lock. ``overwrite(condition)`` and SQL
``DELETE``/``MERGE`` could not carry the snapshot properties anyway. The cost: a table partitioned
by the user is not supported by this engine (the files are written unpartitioned).
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

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from icefloe import destination, tables
from icefloe.engines import Committed, FailedFile, StagedBatch
from icefloe.engines.spark.failures import file_error_type, is_infrastructure, one_line
from icefloe.engines.spark.session import SparkTarget
from icefloe.errors import CommitError, ConfigurationError, EngineError, LeaseLostError, PermanentFileError
from icefloe.formats import ReadOptions
from icefloe.identifiers import split_identifier
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


@dataclass
class _Part:
    """A group of files read and validated together."""

    files: list[ClaimedFile]
    df: DataFrame
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # uri -> (records, size)


@dataclass
class SparkStagedBatch(StagedBatch):
    """A batch staged by Spark: its rows written as Parquet files, not yet committed."""

    parquet_paths: list[str] = field(default_factory=list)


class SparkEngine:
    """Stages batches on a Spark Connect server. One instance per ingestion run."""

    def __init__(
        self,
        *,
        target: SparkTarget,
        catalog: Catalog,
        table_identifier: str,
        options: ReadOptions,
        infer_schema: bool,
        spark_factory: Callable[[SparkTarget], SparkSession] | None = None,
        current_etag: Callable[[str], str | None] | None = None,
    ) -> None:
        from icefloe.engines.spark import session as sessions

        self.target = target
        self.catalog = catalog
        self.table_identifier = table_identifier
        self.options = options
        self.destination = destination.TableDestination(catalog, table_identifier, options.schema, infer_schema)
        self._spark_factory = spark_factory or sessions.session
        self.current_etag = current_etag  # the source's version now (HEAD): see stage()
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
        namespace, name = split_identifier(self.table_identifier)
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
        elif self.options.format == "json":  # one document per file: an array of objects, or one object
            opts.update(mode="FAILFAST", encoding="UTF-8", multiLine="true")
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
        self, files: list[ClaimedFile], staged: SparkStagedBatch, ingested_at: dt.datetime, exact: dict[str, str]
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
        staged: SparkStagedBatch,
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
            if is_infrastructure(exc):
                raise EngineError(f"Spark failed on batch {batch.batch_id}: {one_line(exc)}") from exc
            if len(files) == 1:
                file = files[0]
                message = one_line(exc)
                error = PermanentFileError(
                    f"{file.file_path}: {message}", error_type=file_error_type(message, self.options.format)
                )
                log.warning("file failed: %s", error, extra={"file_path": file.file_path})
                ms = int((time.monotonic() - started) * 1000)
                staged.failed.append(FailedFile(file, error, 0, ms))
                return []
            log.info("batch %s: a job over %d files failed; bisecting", batch.batch_id, len(files))
            half = len(files) // 2
            return self._validate(files[:half], staged, ingested_at, exact, cancelled, batch) + self._validate(
                files[half:], staged, ingested_at, exact, cancelled, batch
            )

    # ------------------------------------------------------------------ staging

    def stage(self, batch: Batch, cancelled: threading.Event) -> SparkStagedBatch:
        self._release_cache()  # the previous batch is committed (or abandoned) by now
        staged = SparkStagedBatch()
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
        if staged.records and good_parts:
            assert staged.table is not None
            staged.parquet_paths = self._write_parquet(staged.table, batch, good_parts)
        # Spark cannot read conditionally: check afterwards that what it read (the cache may be
        # recomputed from the source while writing) is the listed version, as If-Match would.
        moved = self._changed_since_listing([o.file for o in staged.succeeded])
        if moved:
            log.info("batch %s: %d file(s) changed while Spark read them; rediscovering", batch.batch_id, len(moved))
            if staged.table is not None:
                tables.delete_paths(staged.table, staged.parquet_paths)
            staged.changed.extend(moved)
            gone = {f.file_path for f in moved}
            staged.succeeded = [o for o in staged.succeeded if o.file.file_path not in gone]
            good_parts = [
                p for p in (self._without(p, gone) for p in good_parts) if any(f.file_path not in gone for f in p.files)
            ]
            staged.parquet_paths = (
                self._write_parquet(staged.table, batch, good_parts)
                if staged.records and good_parts and staged.table is not None
                else []
            )
        return staged

    def _changed_since_listing(self, files: list[ClaimedFile]) -> list[ClaimedFile]:
        if self.current_etag is None:
            return []
        return [f for f in files if self.current_etag(f.file_path) != f.etag]

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

    def _write_parquet(self, table: Table, batch: Batch, parts: list[_Part]) -> list[str]:
        """The batch's rows as Parquet files under the table's data folder (committed by :meth:`commit`)."""
        from pyspark.sql import functions as F

        folder = f"{table.location().rstrip('/')}/data/icefloe-staged/{batch.batch_id}-{uuid.uuid4().hex[:8]}"
        spark_folder = self.spark_uri(folder)
        try:
            self._final(parts).write.mode("error").option("compression", "zstd").parquet(spark_folder)
            written = self.spark.read.parquet(spark_folder).select(F.col("_metadata.file_path")).distinct()
            return sorted(self._ledger_uri(r[0]) for r in written.collect())
        except Exception as exc:
            raise EngineError(f"Spark could not write batch {batch.batch_id}: {one_line(exc)}") from exc

    # ------------------------------------------------------------------ the seam

    def commit(self, table: Table, staged: StagedBatch, properties: dict[str, str], replaced: list[str]) -> Committed:
        if not isinstance(staged, SparkStagedBatch):
            raise CommitError(f"the Spark engine cannot commit a {type(staged).__name__}")
        snapshot_id, snapshots, _ = tables.commit_rows(table, properties, replaced, parquet_paths=staged.parquet_paths)
        return Committed(snapshot_id, snapshots)


def build(rt: Runtime, ingestion: Ingestion) -> SparkEngine:
    """The Spark engine for ``ingestion`` (registered in :data:`icefloe.engines.ENGINES`)."""
    from icefloe.engines.spark.session import target_for

    target = target_for(rt.catalog, rt.settings, ingestion.spark_remote)
    return SparkEngine(
        target=target,
        catalog=rt.catalog,
        table_identifier=ingestion.table_identifier,
        options=ReadOptions.for_ingestion(ingestion),
        infer_schema=ingestion.schema is None,
        current_etag=rt.objects.current_version,
    )


__all__ = ["SparkEngine", "SparkStagedBatch", "build"]
