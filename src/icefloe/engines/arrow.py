"""The in-process engine: the store's conditional GETs, pyarrow parsing in parser processes,
pyiceberg's Parquet writer.

Small files are fetched and parsed in parallel by reader threads (:mod:`icefloe.engines.arrow_reads`);
tiny ones are packed together into shared data files, one of at least ``OWN_DATA_FILE_BYTES`` gets
its own (a replace of it then drops whole files); a large file is streamed on its own into its own
data files. Memory is bounded by ``PREFETCH_BYTES`` of compressed objects in flight plus
``FLUSH_BYTES`` of Arrow data buffered for writing, whatever the file sizes.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from icefloe import destination, evolution, isolation, tables
from icefloe.badrecords import BadRecord, Policy, too_many
from icefloe.engines import Committed, FailedFile, StagedBatch
from icefloe.engines.arrow_reads import SMALL_FILE_BYTES, FileReader, Rows, text_column
from icefloe.errors import (
    FileError,
    LeaseLostError,
    ObjectChangedError,
    PermanentFileError,
    SchemaChangePendingError,
    TransientFileError,
)
from icefloe.formats import LineTooLongError, ReadOptions
from icefloe.ledger import Batch, ClaimedFile, FileOutcome
from icefloe.retry import IN_PLACE, IN_PLACE_ATTEMPTS
from icefloe.schema import ValueChangedError, arrow_target, conform, normalise_type
from icefloe.schema_changes import HeldFile
from icefloe.stores import Store, parse_source

if TYPE_CHECKING:
    from icefloe.models import Ingestion
    from icefloe.runtime import Runtime
    from icefloe.settings import Settings

log = logging.getLogger(__name__)

FLUSH_BYTES = 128 << 20  # Arrow bytes buffered before a shared data file is written
# Buffered tables are combined into one every COMPACT_TABLES: a tiny file's table (a few rows,
# still holding its parser frame) costs ~20 KB held, far more than its rows.
COMPACT_TABLES = 256
SPLIT_MIN_BYTES = 16 << 20  # a batch with at least this many bytes of small files writes its first half early
STREAM_CHUNK_BYTES = 64 << 20  # Arrow bytes of a streamed large file held per data file written
# A source file at least this large gets data files of its own, so that replacing it (--on-change
# replace) drops those whole instead of rewriting the rows of the files packed with it.
OWN_DATA_FILE_BYTES = 1 << 20


class ArrowEngine:
    """Stages batches in this process. One instance per ingestion; reused across batches."""

    def __init__(
        self,
        *,
        objects: Store,
        catalog: Catalog,
        table_identifier: str,
        options: ReadOptions,
        infer_schema: bool,
        threads: int = 8,
        parser_processes: int = 0,
        policy: Policy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        schema_evolution: str = "add-columns",
    ) -> None:
        self.objects = objects
        self.catalog = catalog
        self.table_identifier = table_identifier
        self.options = options
        self.destination = destination.TableDestination(
            catalog,
            table_identifier,
            options.schema,
            infer_schema,
            max_nesting=options.max_nesting,
            policy=schema_evolution,
        )
        self.rescue = schema_evolution == "rescue"
        self.threads = threads
        self._sleep = sleep
        self.policy = policy or Policy()  # what a bad record does (badrecords.py)
        # Fetched files are parsed in child processes (see isolation.py); 0: in this process.
        pool = isolation.shared_pool(parser_processes) if parser_processes > 0 else None
        self.reader = FileReader(objects, options, pool, self.policy, rescue=self.rescue, sleep=sleep)

    # ------------------------------------------------------------------ the seam

    def commit(self, table: Table, staged: StagedBatch, properties: dict[str, str], replaced: list[str]) -> Committed:
        evolve_to = staged.table.schema() if staged.table is not None and staged.evolved_by is not None else None
        change = None
        if evolve_to is not None:
            # What this commit changes on the head it was given (part of it may have landed meanwhile).
            change = evolution.diff(table.schema().as_arrow(), evolve_to.as_arrow(), normalise_type) or None
        landed = tables.commit_rows(table, properties, replaced, data_files=staged.data_files, evolve_to=evolve_to)
        return Committed(landed.snapshot_id, landed.snapshots, schema_change=change, schema_id=landed.schema_id)

    def stage(self, batch: Batch, cancelled: threading.Event) -> StagedBatch:
        staged = StagedBatch()
        ingested_at = pa.scalar(dt.datetime.now(dt.UTC), pa.timestamp("us", tz="UTC"))
        small = [f for f in batch.files if f.size <= SMALL_FILE_BYTES]
        large = [f for f in batch.files if f.size > SMALL_FILE_BYTES]
        try:
            with (
                ThreadPoolExecutor(self.threads, thread_name_prefix="icefloe-read") as readers,
                ThreadPoolExecutor(1, thread_name_prefix="icefloe-write") as writer,
            ):
                large += self._stage_small(staged, batch, small, readers, writer, ingested_at, cancelled)
            for file in large:
                if cancelled.is_set():
                    raise LeaseLostError(f"lease on batch {batch.batch_id} lost")
                self._stage_large(staged, file, ingested_at)
        except BaseException:
            # Nothing of this batch will be committed: don't leave its data files behind.
            if staged.table is not None:
                tables.delete_data_files(staged.table, staged.data_files)
            raise
        return staged

    def _stage_small(
        self,
        staged: StagedBatch,
        batch: Batch,
        files: list[ClaimedFile],
        readers: ThreadPoolExecutor,
        writer: ThreadPoolExecutor,
        ingested_at: pa.Scalar,
        cancelled: threading.Event,
    ) -> list[ClaimedFile]:
        """Pack small files into shared data files, written on ``writer`` while reading goes on.

        Returns the compressed files that turned out to expand too much to be read whole.
        """
        expanding: list[ClaimedFile] = []
        buffer: list[pa.Table] = []
        compacted = 0  # buffer[:compacted] are combined tables (see COMPACT_TABLES)
        buffered_bytes = 0
        # The first half of a big enough batch is written while the second half is read: the
        # write left at the batch's end (nothing else runs then) is half as long (d1: 0.5 -> 0.25 s
        # a batch), for one more data file a batch.
        batch_bytes = sum(f.size for f in files)
        half_written = batch_bytes < SPLIT_MIN_BYTES  # a small batch is written once, at its end
        read_bytes = 0
        buffered_outcomes: list[FileOutcome] = []
        target: pa.Schema | None = None  # the table's Arrow schema, recomputed when it evolves
        if files and staged.table is None:
            # Known before the reads start, the table's schema lets the reader threads conform
            # what they parse (else the first result decides it, after a whole batch of tiny files
            # was submitted: all of them then conformed here, on this thread).
            staged.table = self.destination.load()
            target = arrow_target(staged.table) if staged.table is not None else None
        writing: Future[list[DataFile]] | None = None
        writing_outcomes: list[FileOutcome] = []

        def settle_write() -> None:
            nonlocal writing
            if writing is not None:
                staged.data_files.extend(writing.result())
                staged.succeeded.extend(writing_outcomes)
                writing = None

        def flush() -> None:
            nonlocal buffered_bytes, compacted, writing, writing_outcomes
            settle_write()  # at most one write in flight: memory stays bounded
            if not buffer:
                return
            assert staged.table is not None
            table, combined = staged.table, pa.concat_tables(buffer)
            writing = writer.submit(contextvars.copy_context().run, self._write_shared, table, combined)
            writing_outcomes = list(buffered_outcomes)
            buffer.clear()
            buffered_outcomes.clear()
            buffered_bytes = compacted = 0

        # The lambda reads the latest target on purpose: reads started later conform to it.
        for read in self.reader.prefetched(files, readers, lambda: target, ingested_at):  # noqa: B023
            if cancelled.is_set():
                # Give up at once: reads queued but not started are dropped, not waited for.
                readers.shutdown(wait=False, cancel_futures=True)
                settle_write()
                raise LeaseLostError(f"lease on batch {batch.batch_id} lost")
            ms = int((time.monotonic() - read.started) * 1000)
            if read.expands:
                expanding.append(read.file)
                continue
            if read.error is not None or read.table is None:
                self._record_failure(staged, read.file, read.error, read.bytes_read, ms)
                continue
            if read.table.num_rows == 0:
                # An empty file succeeds with 0 records; its (empty) schema must not shape the table.
                staged.succeeded.append(self._outcome(staged, read.file, 0, read.bytes_read, ms, read.bad))
                continue
            conformed, bad = read.table, read.bad
            if not read.conformed or conformed.schema != target:
                try:
                    if self.reader.needs_table(target, read.table.schema):
                        table = self._table_for(staged, read.table.schema, read.file)
                        new_target = arrow_target(table)
                        if target is not None and new_target != target:
                            # Buffered rows were conformed to the old schema: write them first.
                            # (pyiceberg evolves the Table object in place, so compare our targets.)
                            flush()
                        staged.table, target = table, new_target
                    try:
                        conformed = conform(
                            read.table,
                            target,
                            source_file=read.file.file_path,
                            ingested_at=ingested_at,
                            file_uri=read.file.file_path,
                            rescue=self.rescue,
                        )
                    except PermanentFileError as exc:
                        retry_as_text = isinstance(exc, ValueChangedError) and exc.retry_as_text
                        if not retry_as_text and not self.policy.salvages(exc, self.options):
                            raise
                        # Parsed before the table's types were known: read it again knowing them
                        # (record by record when a value does not fit: --on-bad-record).
                        again = self.reader.read_small(read.file, target, ingested_at, salvage=not retry_as_text)
                        if again.table is None:
                            self._record_failure(staged, read.file, again.error or exc, again.bytes_read, ms)
                            continue
                        conformed, bad = again.table, again.bad
                except FileError as exc:
                    self._record_failure(staged, read.file, exc, read.bytes_read, ms)
                    continue
            own = read.file.size >= OWN_DATA_FILE_BYTES
            if own:
                flush()
            buffer.append(conformed)
            if len(buffer) - compacted >= COMPACT_TABLES:  # the tables since the last compaction, as one
                buffer[compacted:] = [pa.concat_tables(buffer[compacted:]).combine_chunks()]
                compacted = len(buffer)
            buffered_bytes += conformed.nbytes
            buffered_outcomes.append(self._outcome(staged, read.file, conformed.num_rows, read.bytes_read, ms, bad))
            read_bytes += read.file.size
            if own or buffered_bytes >= FLUSH_BYTES or (not half_written and 2 * read_bytes >= batch_bytes):
                half_written = True
                flush()
        flush()
        settle_write()
        return expanding

    def _write_shared(self, table: Table, rows: pa.Table) -> list[DataFile]:
        """Write the packed rows of small files; a failing warehouse (after pyarrow's own retries)
        is retried here with backoff, rewriting the chunk, before it fails the batch."""
        for attempt in range(1, IN_PLACE_ATTEMPTS + 1):
            written: list[DataFile] = []
            try:
                written.extend(tables.write_data_files(table, rows, rows.schema))
                return written
            except OSError as exc:
                tables.delete_data_files(table, written)
                if attempt == IN_PLACE_ATTEMPTS:
                    raise
                log.warning("writing data files failed (%s); retrying", exc)
                self._sleep(IN_PLACE.delay(attempt))
        raise AssertionError("unreachable")

    def _stage_large(self, staged: StagedBatch, file: ClaimedFile, ingested_at: pa.Scalar) -> None:
        """Stream one large file into its own data files; a failure discards only those.

        Transient errors restart the file (up to IN_PLACE_ATTEMPTS); a line longer than the block
        restarts it with a larger block (up to ``max_line_bytes``), a date-like text going into a
        string column restarts it with that column read as text; anything else fails it.
        """
        started = time.monotonic()
        options = self.options
        attempt = 1
        while True:
            written: list[DataFile] = []
            counter = _CountingReader(None)
            bad: list[BadRecord] = []
            try:
                records = self._write_large(staged, file, ingested_at, written, counter, options, bad)
                self.policy.check(file.file_path, bad, records)
                staged.data_files.extend(written)
                ms = int((time.monotonic() - started) * 1000)
                staged.succeeded.append(self._outcome(staged, file, records, counter.count, ms, bad))
                return
            except LeaseLostError:
                raise
            except Exception as exc:
                if staged.table is not None:
                    tables.delete_data_files(staged.table, written)
                if isinstance(exc, LineTooLongError) and options.block_size < options.max_line_bytes:
                    options = replace(options, block_size=min(options.block_size * 4, options.max_line_bytes))
                    continue
                if isinstance(exc, LineTooLongError):
                    exc = PermanentFileError(
                        f"{exc} (the limit, ICEFLOE_MAX_LINE_BYTES, is {options.max_line_bytes} bytes)",
                        error_type="LineTooLong",
                    )
                column = text_column(exc, options)
                if column is not None:
                    options = replace(options, text_columns=options.text_columns | {column})
                    continue
                if self.policy.salvages(exc, options):
                    # A record that does not parse or fit: stream it again record by record.
                    target = arrow_target(staged.table) if staged.table is not None else None
                    options = replace(options, salvage=True, target=target)
                    continue
                if isinstance(exc, TransientFileError) and attempt < IN_PLACE_ATTEMPTS:
                    self._sleep(IN_PLACE.delay(attempt))
                    attempt += 1
                    continue
                if isinstance(exc, OSError) and not isinstance(exc, FileError):
                    # Not the source file's fault: writing to the warehouse failed (network, store).
                    exc = TransientFileError(f"{file.file_path}: writing its data files failed: {exc}")
                    if attempt < IN_PLACE_ATTEMPTS:
                        self._sleep(IN_PLACE.delay(attempt))
                        attempt += 1
                        continue
                if not isinstance(exc, FileError | ObjectChangedError):
                    exc = PermanentFileError(f"{file.file_path}: {exc}", error_type="UnreadableFile")
                ms = int((time.monotonic() - started) * 1000)
                self._record_failure(staged, file, exc, counter.count, ms)
                return

    def _table_for(self, staged: StagedBatch, schema: pa.Schema, file: ClaimedFile) -> Table:
        """The table for a file's rows (a change add-columns stages is committed with the batch); a
        schema pyiceberg refuses is that file's error."""
        try:
            resolved = self.destination.resolve(staged.table, schema, file.file_path)
        except (ValueError, TypeError, RecursionError) as exc:  # pyiceberg: "Invalid schema …"
            raise PermanentFileError(f"{file.file_path}: {exc}", error_type="InvalidSchema") from exc
        if resolved.created:
            staged.created_by = file.file_path
        if resolved.change is not None and staged.evolved_by is None:
            staged.evolved_by = file.file_path
        return resolved.table

    def _write_large(
        self,
        staged: StagedBatch,
        file: ClaimedFile,
        ingested_at: pa.Scalar,
        written: list[DataFile],
        counter: _CountingReader,
        options: ReadOptions,
        bad: list[BadRecord],
    ) -> int:
        """Write ``file`` streaming; data files are appended to ``written`` as they complete, bad
        records (when salvaging) to ``bad``."""
        if staged.table is None:
            # Load the table before the GET opens: its metadata read once stalled for seconds behind
            # the open, not yet read body (and hit a 3 s timeout).
            staged.table = self.destination.load()
        body = self.objects.open(file.file_path, file.etag)
        counter.body = body
        limit = self.policy.limit

        def rows(stream: Iterator[tuple[Rows, list[BadRecord]]]) -> Iterator[Rows]:
            for rb, rejected in stream:
                bad.extend(rejected)
                if limit is not None and not limit.percent and limit.exceeded(len(bad), 0):
                    raise too_many(file.file_path, bad, None, limit)  # no need to read on
                if rb.num_rows:
                    yield rb

        try:
            with contextlib.closing(self.reader.stream(counter, file, options)) as stream:
                batches = rows(stream)
                first = next(batches, None)
                if first is None:
                    return 0
                table = self._table_for(staged, first.schema, file)
                staged.table = table
                target = arrow_target(table)
                records = 0

                def conformed() -> Iterator[pa.RecordBatch]:
                    nonlocal records
                    for rb in _chain(first, batches):
                        t = conform(
                            rb,
                            target,
                            source_file=file.file_path,
                            ingested_at=ingested_at,
                            file_uri=file.file_path,
                            rescue=self.rescue,
                        )
                        records += t.num_rows
                        yield from t.to_batches()

                written.extend(tables.write_data_files(table, conformed(), target, chunk_bytes=STREAM_CHUNK_BYTES))
                return records
        finally:
            body.release_conn()

    def _outcome(
        self, staged: StagedBatch, file: ClaimedFile, records: int, nbytes: int, ms: int, bad: list[BadRecord]
    ) -> FileOutcome:
        """A file's outcome once read; under quarantine its bad records wait in ``staged`` for the
        quarantine commit (skipped ones are only counted)."""
        if bad and self.policy.quarantines:
            staged.bad_records[file.id] = bad
        return FileOutcome(file, records, nbytes, ms, rejected=len(bad))

    @staticmethod
    def _record_failure(staged: StagedBatch, file: ClaimedFile, error: Exception | None, nbytes: int, ms: int) -> None:
        if isinstance(error, ObjectChangedError):
            staged.changed.append(file)
            return
        if isinstance(error, SchemaChangePendingError):
            log.info("file held: %s", error, extra={"file_path": file.file_path})
            staged.held.append(HeldFile(file, error.change, str(error), nbytes, ms))
            return
        if not isinstance(error, FileError):
            error = PermanentFileError(f"{file.file_path}: {error}", error_type="UnreadableFile")
        log.warning("file failed: %s", error, extra={"file_path": file.file_path, "error_type": error.error_type})
        staged.failed.append(FailedFile(file, error, nbytes, ms))


def _chain(first: Rows, rest: Iterator[Rows]) -> Iterator[Rows]:
    yield first
    yield from rest


class _CountingReader(io.RawIOBase):
    """Wraps a streaming body, counting the bytes read from S3."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self.body = body
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.body.read(size if size is not None and size >= 0 else None)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def prepare(settings: Settings, files: int) -> None:
    """Start the parser children while the run is still listing (see :func:`icefloe.engines.warm_up`):
    no more than there are files to parse, as an idle child holds ~50 MB."""
    if settings.parser_processes > 0:
        isolation.shared_pool(settings.parser_processes).prestart(files)


def build(rt: Runtime, ingestion: Ingestion) -> ArrowEngine:
    """The arrow engine for ``ingestion`` (registered in :data:`icefloe.engines.ENGINES`)."""
    return ArrowEngine(
        objects=rt.store(parse_source(ingestion.source)),
        catalog=rt.catalog,
        table_identifier=ingestion.table_identifier,
        options=ReadOptions.for_ingestion(ingestion, rt.settings),
        infer_schema=True,  # --schema columns are hints: the other columns are inferred
        threads=rt.settings.read_threads,
        parser_processes=rt.settings.parser_processes,
        schema_evolution=ingestion.schema_evolution,
        policy=Policy.of(ingestion.on_bad_record, ingestion.max_bad_records),
    )
