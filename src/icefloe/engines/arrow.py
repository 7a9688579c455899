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
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from icefloe import tables
from icefloe.engines import StagedBatch
from icefloe.errors import (
    FileError,
    LeaseLostError,
    ObjectChangedError,
    PermanentFileError,
    TransientFileError,
)
from icefloe.formats import ReadOptions, record_batches, spooled
from icefloe.ledger import Batch, ClaimedFile, FileOutcome
from icefloe.retry import IN_PLACE_ATTEMPTS
from icefloe.s3 import object_errors, split_uri
from icefloe.schema import conform, new_columns, table_arrow_schema

log = logging.getLogger(__name__)

SMALL_FILE_BYTES = 32 << 20  # fetched whole and parsed in parallel; larger files are streamed
PREFETCH_BYTES = 256 << 20  # compressed bytes of small files in flight at once
FLUSH_BYTES = 128 << 20  # Arrow bytes buffered before a shared data file is written


@dataclass
class _Read:
    file: ClaimedFile
    table: pa.Table | None
    error: Exception | None
    bytes_read: int
    started: float


class ArrowEngine:
    """Stages batches in this process. One instance per ingestion; reused across batches."""

    def __init__(
        self,
        *,
        s3: Any,
        catalog: Catalog,
        table_identifier: str,
        options: ReadOptions,
        infer_schema: bool,
        threads: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.s3 = s3
        self.catalog = catalog
        self.table_identifier = table_identifier
        self.options = options
        self.infer_schema = infer_schema
        self.threads = threads
        self._sleep = sleep

    # ------------------------------------------------------------------ table

    def _table_for(self, table: Table | None, data_schema: pa.Schema) -> Table:
        """The target table, created from the data (or the ingestion's schema) on first use and
        evolved with new columns when the ingestion infers its schema."""
        if table is None:
            table = tables.load_table(self.catalog, self.table_identifier)
        if table is None:
            base = self.options.schema if self.options.schema is not None else data_schema
            return tables.create_table(self.catalog, self.table_identifier, table_arrow_schema(base))
        if self.infer_schema:
            extra = new_columns(table.schema().as_arrow(), data_schema)
            if extra is not None:
                log.info("adding columns %s to %s", extra.names, self.table_identifier)
                table = tables.add_columns(table, extra)
        return table

    # ------------------------------------------------------------------ reading

    def _get(self, file: ClaimedFile, **kwargs: Any) -> Any:
        bucket, key = split_uri(file.file_path)
        with object_errors(file.file_path):
            return self.s3.get_object(Bucket=bucket, Key=key, IfMatch=f'"{file.etag}"', **kwargs)["Body"]

    def _read_small(self, file: ClaimedFile) -> _Read:
        started = time.monotonic()
        nbytes = 0
        for attempt in range(1, IN_PLACE_ATTEMPTS + 1):
            try:
                with object_errors(file.file_path):
                    data = self._get(file).read()
                nbytes = len(data)
                batches = list(record_batches(pa.BufferReader(data), file.file_path, self.options))
                schema = batches[0].schema if batches else (self.options.schema or pa.schema([]))
                return _Read(file, pa.Table.from_batches(batches, schema=schema), None, nbytes, started)
            except TransientFileError as exc:
                if attempt == IN_PLACE_ATTEMPTS:
                    return _Read(file, None, exc, nbytes, started)
                self._sleep(0.5 * 2**attempt)
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

    def _prefetched(self, files: list[ClaimedFile], pool: ThreadPoolExecutor) -> Iterator[_Read]:
        """Small files read in parallel, yielded in order, at most PREFETCH_BYTES in flight."""
        pending: deque[tuple[ClaimedFile, Future[_Read]]] = deque()
        in_flight = 0
        todo = iter(files)
        nxt = next(todo, None)
        while nxt is not None or pending:
            while nxt is not None and (not pending or in_flight + nxt.size <= PREFETCH_BYTES):
                pending.append((nxt, pool.submit(self._read_small, nxt)))
                in_flight += nxt.size
                nxt = next(todo, None)
            file, future = pending.popleft()
            in_flight -= file.size
            yield future.result()

    # ------------------------------------------------------------------ staging

    def stage(self, batch: Batch, cancelled: threading.Event) -> StagedBatch:
        staged = StagedBatch()
        ingested_at = pa.scalar(dt.datetime.now(dt.UTC), pa.timestamp("us", tz="UTC"))
        small = [f for f in batch.files if f.size <= SMALL_FILE_BYTES]
        large = [f for f in batch.files if f.size > SMALL_FILE_BYTES]
        buffer: list[pa.Table] = []
        buffered_outcomes: list[FileOutcome] = []

        def flush() -> None:
            if not buffer:
                return
            assert staged.table is not None
            combined = pa.concat_tables(buffer)
            staged.data_files.extend(tables.write_data_files(staged.table, combined, combined.schema))
            staged.succeeded.extend(buffered_outcomes)
            buffer.clear()
            buffered_outcomes.clear()

        try:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="icefloe-read") as pool:
                for read in self._prefetched(small, pool):
                    if cancelled.is_set():
                        raise LeaseLostError(f"lease on batch {batch.batch_id} lost")
                    ms = int((time.monotonic() - read.started) * 1000)
                    if read.error is not None or read.table is None:
                        self._record_failure(staged, read.file, read.error, read.bytes_read, ms)
                        continue
                    try:
                        table = self._table_for(staged.table, read.table.schema)
                        if staged.table is not None and table.schema() != staged.table.schema():
                            flush()  # buffered rows were conformed to the old schema: write them first
                        staged.table = table
                        conformed = conform(
                            read.table,
                            table.schema().as_arrow(),
                            source_file=read.file.file_path,
                            ingested_at=ingested_at,
                            file_uri=read.file.file_path,
                        )
                    except FileError as exc:
                        self._record_failure(staged, read.file, exc, read.bytes_read, ms)
                        continue
                    buffer.append(conformed)
                    buffered_outcomes.append(FileOutcome(read.file, conformed.num_rows, read.bytes_read, ms))
                    if sum(t.nbytes for t in buffer) >= FLUSH_BYTES:
                        flush()
                flush()
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

    def _stage_large(self, staged: StagedBatch, file: ClaimedFile, ingested_at: pa.Scalar) -> None:
        """Stream one large file into its own data files; a failure discards only those."""
        started = time.monotonic()
        for attempt in range(1, IN_PLACE_ATTEMPTS + 1):
            counter = _CountingReader(None)
            written: list[DataFile] = []
            records = 0
            try:
                body = self._get(file)
                counter = _CountingReader(body)
                source: Any = spooled(counter) if self.options.format == "parquet" else counter
                with object_errors(file.file_path):
                    batches = record_batches(source, file.file_path, self.options)
                    first = next(batches, None)
                    if first is None:
                        ms = int((time.monotonic() - started) * 1000)
                        staged.succeeded.append(FileOutcome(file, 0, counter.count, ms))
                        return
                    table = self._table_for(staged.table, first.schema)
                    staged.table = table
                    target = table.schema().as_arrow()

                    def conformed(
                        first: pa.RecordBatch = first,
                        batches: Iterator[pa.RecordBatch] = batches,
                        target: pa.Schema = target,
                    ) -> Iterator[pa.RecordBatch]:
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

                    for data_file in tables.write_data_files(table, conformed(), target):
                        written.append(data_file)
                staged.data_files.extend(written)
                ms = int((time.monotonic() - started) * 1000)
                staged.succeeded.append(FileOutcome(file, records, counter.count, ms))
                return
            except TransientFileError as exc:
                if staged.table is not None:
                    tables.delete_data_files(staged.table, written)
                if attempt == IN_PLACE_ATTEMPTS:
                    self._record_failure(
                        staged, file, exc, counter.count, int((time.monotonic() - started) * 1000)
                    )
                    return
                self._sleep(0.5 * 2**attempt)
            except (FileError, ObjectChangedError) as exc:
                if staged.table is not None:
                    tables.delete_data_files(staged.table, written)
                self._record_failure(
                    staged, file, exc, counter.count, int((time.monotonic() - started) * 1000)
                )
                return
            except LeaseLostError:
                raise
            except Exception as exc:  # never let one file take the batch down
                if staged.table is not None:
                    tables.delete_data_files(staged.table, written)
                error = PermanentFileError(f"{file.file_path}: {exc}", error_type="UnreadableFile")
                self._record_failure(
                    staged, file, error, counter.count, int((time.monotonic() - started) * 1000)
                )
                return

    @staticmethod
    def _record_failure(
        staged: StagedBatch, file: ClaimedFile, error: Exception | None, nbytes: int, ms: int
    ) -> None:
        if isinstance(error, ObjectChangedError):
            staged.changed.append(file)
            return
        if not isinstance(error, FileError):
            error = PermanentFileError(f"{file.file_path}: {error}", error_type="UnreadableFile")
        log.warning(
            "file failed: %s", error, extra={"file_path": file.file_path, "error_type": error.error_type}
        )
        staged.failed.append((file, error, nbytes, ms))


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
