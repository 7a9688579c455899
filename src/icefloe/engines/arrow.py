"""The in-process engine: boto3 GETs, pyarrow parsing, pyiceberg's Parquet writer.

Small files are fetched and parsed in parallel (pyarrow releases the GIL) and packed together
into shared data files; a large file is streamed on its own into its own data files. Memory is
bounded by ``PREFETCH_BYTES`` of compressed objects in flight plus ``FLUSH_BYTES`` of Arrow data
buffered for writing, whatever the file sizes.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from icefloe import tables
from icefloe.engines import Committed, FailedFile, StagedBatch
from icefloe.errors import (
    FileError,
    LeaseLostError,
    ObjectChangedError,
    PermanentFileError,
    TransientFileError,
)
from icefloe.formats import ReadOptions, record_batches, spooled
from icefloe.ledger import Batch, ClaimedFile, FileOutcome
from icefloe.retry import IN_PLACE, IN_PLACE_ATTEMPTS
from icefloe.s3 import ObjectReader, object_errors
from icefloe.schema import arrow_target, conform

if TYPE_CHECKING:
    from icefloe.models import Ingestion
    from icefloe.runtime import Runtime

log = logging.getLogger(__name__)

SMALL_FILE_BYTES = 32 << 20  # fetched whole and parsed in parallel; larger files are streamed
PREFETCH_BYTES = 64 << 20  # object bytes of small files fetched ahead (enough to keep 2 cores parsing)
FLUSH_BYTES = 128 << 20  # Arrow bytes buffered before a shared data file is written
STREAM_CHUNK_BYTES = 64 << 20  # Arrow bytes of a streamed large file held per data file written


@dataclass
class _Read:
    file: ClaimedFile
    table: pa.Table | None
    error: Exception | None
    bytes_read: int
    started: float
    conformed: bool = False  # already cast to the table schema known when the read started


class ArrowEngine:
    """Stages batches in this process. One instance per ingestion; reused across batches."""

    def __init__(
        self,
        *,
        objects: ObjectReader,
        catalog: Catalog,
        table_identifier: str,
        options: ReadOptions,
        infer_schema: bool,
        threads: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.objects = objects
        self.catalog = catalog
        self.table_identifier = table_identifier
        self.options = options
        self.destination = tables.TableDestination(catalog, table_identifier, options.schema, infer_schema)
        self.threads = threads
        self._sleep = sleep

    # ------------------------------------------------------------------ reading

    def _read_small(self, file: ClaimedFile, target: pa.Schema | None, ingested_at: pa.Scalar) -> _Read:
        """GET + parse (+ conform, when the table schema is known and covers the file) in a thread."""
        started = time.monotonic()
        nbytes = 0
        for attempt in range(1, IN_PLACE_ATTEMPTS + 1):
            try:
                data = self.objects.read(file.file_path, file.etag)
                nbytes = len(data)
                batches = list(record_batches(pa.BufferReader(data), file.file_path, self.options))
                schema = batches[0].schema if batches else (self.options.schema or pa.schema([]))
                table = pa.Table.from_batches(batches, schema=schema)
                if target is not None and set(schema.names) <= set(target.names):
                    table = conform(
                        table,
                        target,
                        source_file=file.file_path,
                        ingested_at=ingested_at,
                        file_uri=file.file_path,
                    )
                    return _Read(file, table, None, nbytes, started, conformed=True)
                return _Read(file, table, None, nbytes, started)
            except TransientFileError as exc:
                if attempt == IN_PLACE_ATTEMPTS:
                    return _Read(file, None, exc, nbytes, started)
                self._sleep(IN_PLACE.delay(attempt))
            except (FileError, ObjectChangedError) as exc:
                return _Read(file, None, exc, nbytes, started)
            except Exception as exc:  # never let one file take the batch down
                return _Read(
                    file,
                    None,
                    PermanentFileError(f"{file.file_path}: {exc}", error_type="UnreadableFile"),
                    nbytes,
                    started,
                )
        raise AssertionError("unreachable")

    def _prefetched(
        self,
        files: list[ClaimedFile],
        pool: ThreadPoolExecutor,
        target: Callable[[], pa.Schema | None],
        ingested_at: pa.Scalar,
    ) -> Iterator[_Read]:
        """Small files read in parallel, yielded in order, at most PREFETCH_BYTES in flight."""
        pending: deque[tuple[ClaimedFile, Future[_Read]]] = deque()
        in_flight = 0
        todo = iter(files)
        nxt = next(todo, None)
        while nxt is not None or pending:
            while nxt is not None and (not pending or in_flight + nxt.size <= PREFETCH_BYTES):
                pending.append((nxt, pool.submit(self._read_small, nxt, target(), ingested_at)))
                in_flight += nxt.size
                nxt = next(todo, None)
            file, future = pending.popleft()
            in_flight -= file.size
            yield future.result()

    # ------------------------------------------------------------------ the seam

    def commit(self, table: Table, staged: StagedBatch, properties: dict[str, str], replaced: list[str]) -> Committed:
        snapshot_id, snapshots = tables.commit_rows(table, properties, replaced, data_files=staged.data_files)
        return Committed(snapshot_id, snapshots)

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
                self._stage_small(staged, batch, small, readers, writer, ingested_at, cancelled)
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
    ) -> None:
        """Pack small files into shared data files, written on ``writer`` while reading goes on."""
        buffer: list[pa.Table] = []
        buffered_bytes = 0
        buffered_outcomes: list[FileOutcome] = []
        target: pa.Schema | None = None  # the table's Arrow schema, recomputed when it evolves
        writing: Future[list[DataFile]] | None = None
        writing_outcomes: list[FileOutcome] = []

        def settle_write() -> None:
            nonlocal writing
            if writing is not None:
                staged.data_files.extend(writing.result())
                staged.succeeded.extend(writing_outcomes)
                writing = None

        def flush() -> None:
            nonlocal buffered_bytes, writing, writing_outcomes
            settle_write()  # at most one write in flight: memory stays bounded
            if not buffer:
                return
            assert staged.table is not None
            table, combined = staged.table, pa.concat_tables(buffer)
            writing = writer.submit(lambda: list(tables.write_data_files(table, combined, combined.schema)))
            writing_outcomes = list(buffered_outcomes)
            buffer.clear()
            buffered_outcomes.clear()
            buffered_bytes = 0

        # The lambda reads the latest target on purpose: reads started later conform to it.
        for read in self._prefetched(files, readers, lambda: target, ingested_at):  # noqa: B023
            if cancelled.is_set():
                # Give up at once: reads queued but not started are dropped, not waited for.
                readers.shutdown(wait=False, cancel_futures=True)
                settle_write()
                raise LeaseLostError(f"lease on batch {batch.batch_id} lost")
            ms = int((time.monotonic() - read.started) * 1000)
            if read.error is not None or read.table is None:
                self._record_failure(staged, read.file, read.error, read.bytes_read, ms)
                continue
            if read.table.num_rows == 0:
                # An empty file succeeds with 0 records; its (empty) schema must not shape the table.
                staged.succeeded.append(FileOutcome(read.file, 0, read.bytes_read, ms))
                continue
            conformed = read.table
            if not read.conformed or conformed.schema != target:
                try:
                    if target is None or not set(read.table.schema.names) <= set(target.names):
                        table = self.destination.table_for(staged.table, read.table.schema)
                        new_target = arrow_target(table)
                        if target is not None and new_target != target:
                            # Buffered rows were conformed to the old schema: write them first.
                            # (pyiceberg evolves the Table object in place, so compare our targets.)
                            flush()
                        staged.table, target = table, new_target
                    conformed = conform(
                        read.table,
                        target,
                        source_file=read.file.file_path,
                        ingested_at=ingested_at,
                        file_uri=read.file.file_path,
                    )
                except FileError as exc:
                    self._record_failure(staged, read.file, exc, read.bytes_read, ms)
                    continue
            buffer.append(conformed)
            buffered_bytes += conformed.nbytes
            buffered_outcomes.append(FileOutcome(read.file, conformed.num_rows, read.bytes_read, ms))
            if buffered_bytes >= FLUSH_BYTES:
                flush()
        flush()
        settle_write()

    def _stage_large(self, staged: StagedBatch, file: ClaimedFile, ingested_at: pa.Scalar) -> None:
        """Stream one large file into its own data files; a failure discards only those.

        Transient errors restart the file (up to IN_PLACE_ATTEMPTS); anything else fails it.
        """
        started = time.monotonic()
        for attempt in range(1, IN_PLACE_ATTEMPTS + 1):
            written: list[DataFile] = []
            counter = _CountingReader(None)
            try:
                records = self._write_large(staged, file, ingested_at, written, counter)
                staged.data_files.extend(written)
                ms = int((time.monotonic() - started) * 1000)
                staged.succeeded.append(FileOutcome(file, records, counter.count, ms))
                return
            except LeaseLostError:
                raise
            except Exception as exc:
                if staged.table is not None:
                    tables.delete_data_files(staged.table, written)
                if isinstance(exc, TransientFileError) and attempt < IN_PLACE_ATTEMPTS:
                    self._sleep(IN_PLACE.delay(attempt))
                    continue
                if isinstance(exc, OSError) and not isinstance(exc, FileError):
                    # Not the source file's fault: writing to the warehouse failed (network, store).
                    exc = TransientFileError(f"{file.file_path}: writing its data files failed: {exc}")
                    if attempt < IN_PLACE_ATTEMPTS:
                        self._sleep(IN_PLACE.delay(attempt))
                        continue
                if not isinstance(exc, FileError | ObjectChangedError):
                    exc = PermanentFileError(f"{file.file_path}: {exc}", error_type="UnreadableFile")
                ms = int((time.monotonic() - started) * 1000)
                self._record_failure(staged, file, exc, counter.count, ms)
                return

    def _write_large(
        self,
        staged: StagedBatch,
        file: ClaimedFile,
        ingested_at: pa.Scalar,
        written: list[DataFile],
        counter: _CountingReader,
    ) -> int:
        """Write ``file`` streaming; data files are appended to ``written`` as they complete."""
        body = self.objects.open(file.file_path, file.etag)
        counter.body = body
        try:
            source: Any = spooled(counter) if self.options.format == "parquet" else counter
            with object_errors(file.file_path):
                batches = record_batches(source, file.file_path, self.options)
                first = next(batches, None)
                if first is None:
                    return 0
                table = self.destination.table_for(staged.table, first.schema)
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
                        )
                        records += t.num_rows
                        yield from t.to_batches()

                written.extend(tables.write_data_files(table, conformed(), target, chunk_bytes=STREAM_CHUNK_BYTES))
                return records
        finally:
            body.release_conn()

    @staticmethod
    def _record_failure(staged: StagedBatch, file: ClaimedFile, error: Exception | None, nbytes: int, ms: int) -> None:
        if isinstance(error, ObjectChangedError):
            staged.changed.append(file)
            return
        if not isinstance(error, FileError):
            error = PermanentFileError(f"{file.file_path}: {error}", error_type="UnreadableFile")
        log.warning("file failed: %s", error, extra={"file_path": file.file_path, "error_type": error.error_type})
        staged.failed.append(FailedFile(file, error, nbytes, ms))


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
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


def build(rt: Runtime, ingestion: Ingestion) -> ArrowEngine:
    """The arrow engine for ``ingestion`` (registered in :data:`icefloe.engines.ENGINES`)."""
    return ArrowEngine(
        objects=rt.objects,
        catalog=rt.catalog,
        table_identifier=ingestion.table_identifier,
        options=ReadOptions.for_ingestion(ingestion),
        infer_schema=ingestion.schema is None,
        threads=rt.settings.read_threads,
    )
