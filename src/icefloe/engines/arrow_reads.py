"""Reading the small files of a batch for the arrow engine: conditional GETs, parsing in the parser
processes (tiny files in groups, one round trip each), conforming to the table schema when it is
known, in reader threads; ``PREFETCH_BYTES`` of objects in flight at most. A large file's body is
streamed through a parser process by :meth:`FileReader.stream`.
"""

from __future__ import annotations

import contextvars
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import pyarrow as pa

from icefloe import evolution
from icefloe.badrecords import BadRecord, Policy, parse_text, stream_batches
from icefloe.errors import FileError, ObjectChangedError, PermanentFileError, TransientFileError
from icefloe.formats import ReadOptions, expanded, parse_whole, spooled
from icefloe.isolation import Parsed, ParserPool, Readable
from icefloe.ledger import ClaimedFile
from icefloe.retry import IN_PLACE, IN_PLACE_ATTEMPTS
from icefloe.schema import ValueChangedError, conform, normalise_type
from icefloe.stores import Store

SMALL_FILE_BYTES = 32 << 20  # fetched whole and parsed in parallel; larger files are streamed
PREFETCH_BYTES = 64 << 20  # object bytes of small files fetched ahead (enough to keep 2 cores parsing)
# Files up to TINY_FILE_BYTES are fetched and parsed in groups of up to GROUP_FILES files and
# GROUP_BYTES: one parser round trip a group.
TINY_FILE_BYTES = 256 << 10
GROUP_FILES = 32
GROUP_BYTES = 1 << 20

Rows: TypeAlias = pa.RecordBatch | pa.Table  # what a streamed file yields (a salvaged chunk is a table)


@dataclass
class Read:
    """One small file fetched and parsed (conformed when it could be), or why not."""

    file: ClaimedFile
    table: pa.Table | None
    error: Exception | None
    bytes_read: int
    started: float
    conformed: bool = False  # already cast to the table schema known when the read started
    expands: bool = False  # compressed, and expands beyond SMALL_FILE_BYTES: stream it instead
    bad: list[BadRecord] = field(default_factory=list)  # records set aside (--on-bad-record)


class FileReader:
    """Fetches and parses files for one ingestion's engine, from reader threads."""

    def __init__(
        self,
        objects: Store,
        options: ReadOptions,
        pool: ParserPool | None,
        policy: Policy,
        *,
        rescue: bool,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.objects = objects
        self.options = options
        self._pool = pool  # parser processes (see isolation.py); None: parse in this process
        self.policy = policy
        self.rescue = rescue  # --schema-evolution rescue: conform() keeps what does not fit
        self._sleep = sleep
        self._last_fit: tuple[pa.Schema, pa.Schema, bool] | None = None  # see needs_table

    def read_small(
        self,
        file: ClaimedFile,
        target: pa.Schema | None,
        ingested_at: pa.Scalar,
        *,
        salvage: bool = False,
        fetched: tuple[bytes, tuple[Parsed] | None] | None = None,
        started: float | None = None,
    ) -> Read:
        """GET + parse (+ conform, when the table schema is known and covers the file) in a thread.

        ``salvage``: read it record by record at once (its rows did not fit the table);
        ``fetched``: its bytes, and their first parse if done, from :meth:`read_group`.
        """
        started = time.monotonic() if started is None else started
        nbytes = 0
        for attempt in range(1, IN_PLACE_ATTEMPTS + 1):
            try:
                data, first = fetched if fetched is not None else (self.objects.read(file.file_path, file.etag), None)
                fetched = None  # a retry fetches again
                nbytes = len(data)
                options = replace(self.options, salvage=True, target=target) if salvage else self.options
                try:
                    parsed = _unwrap(first) if first is not None else self.parse(data, file.file_path, options)
                except PermanentFileError as exc:
                    if not self.policy.salvages(exc, options):
                        raise
                    options = replace(options, salvage=True, target=target)
                    parsed = self.parse(data, file.file_path, options)
                if parsed is None:
                    return Read(file, None, None, nbytes, started, expands=True)
                table, bad = parsed
                if self.needs_table(target, table.schema):
                    self.policy.check(file.file_path, bad, table.num_rows)
                    return Read(file, table, None, nbytes, started, bad=bad)
                assert target is not None
                while True:
                    try:
                        conformed = conform(
                            table,
                            target,
                            source_file=file.file_path,
                            ingested_at=ingested_at,
                            file_uri=file.file_path,
                            rescue=self.rescue,
                        )
                        self.policy.check(file.file_path, bad, conformed.num_rows)
                        return Read(file, conformed, None, nbytes, started, conformed=True, bad=bad)
                    except PermanentFileError as exc:
                        column = text_column(exc, options)
                        if column is not None:  # read as text what the table holds as text ("2024-01-01")
                            options = replace(options, text_columns=options.text_columns | {column})
                        elif self.policy.salvages(exc, options):  # a value the table cannot hold
                            options = replace(options, salvage=True, target=target)
                        else:
                            raise
                    parsed = self.parse(data, file.file_path, options)
                    if parsed is None:
                        raise PermanentFileError(f"{file.file_path}: expands too much", error_type="UnreadableFile")
                    table, bad = parsed

            except TransientFileError as exc:
                if attempt == IN_PLACE_ATTEMPTS:
                    return Read(file, None, exc, nbytes, started)
                self._sleep(IN_PLACE.delay(attempt))
            except (FileError, ObjectChangedError) as exc:
                return Read(file, None, exc, nbytes, started)
            except Exception as exc:  # never let one file take the batch down
                return Read(
                    file,
                    None,
                    PermanentFileError(f"{file.file_path}: {exc}", error_type="UnreadableFile"),
                    nbytes,
                    started,
                )
        raise AssertionError("unreachable")

    def read_group(self, files: list[ClaimedFile], target: pa.Schema | None, ingested_at: pa.Scalar) -> list[Read]:
        """Tiny files read together: each GET, then one parser round trip for all of them (the
        round trip, not the parse, was most of a tiny file's parsing cost); each file then goes on
        as :meth:`read_small` would, and one whose GET fails is read on its own."""
        assert self._pool is not None
        fetched: list[tuple[ClaimedFile, bytes | None, float]] = []  # with when its GET started
        for file in files:
            started = time.monotonic()
            try:
                fetched.append((file, self.objects.read(file.file_path, file.etag), started))
            except Exception:  # its own read retries, or records the error
                fetched.append((file, None, started))
        got = [(data, f.file_path) for f, data, _ in fetched if data is not None]
        results = self._pool.parse_group(got, self.options, SMALL_FILE_BYTES)
        parsed = iter(results) if results is not None else None  # None: parse each alone
        reads = []
        for file, data, started in fetched:
            prepared = None
            if data is not None:
                prepared = (data, (next(parsed),) if parsed is not None else None)
            reads.append(self.read_small(file, target, ingested_at, fetched=prepared, started=started))
        return reads

    def needs_table(self, target: pa.Schema | None, data: pa.Schema) -> bool:
        """Whether a file's rows need the table decided again: no table yet, or columns it lacks, or
        types it must widen (what to do about them is the ingestion's schema evolution policy).

        The last answer is kept: a batch's files mostly share one schema, and the diff (40 µs)
        was a tenth of a tiny file's CPU in this process."""
        if target is None:
            return True
        last = self._last_fit
        if last is not None and last[0] is target and last[1].equals(data):
            return last[2]
        needs = bool(evolution.diff(target, data, normalise_type))
        self._last_fit = (target, data, needs)
        return needs

    def parse(self, data: bytes, path: str, options: ReadOptions) -> tuple[pa.Table, list[BadRecord]] | None:
        """A fetched file's rows and bad records, or None when it expands beyond SMALL_FILE_BYTES
        (stream it)."""
        if self._pool is not None:
            return self._pool.parse(data, path, options, SMALL_FILE_BYTES)
        text = expanded(data, path, options.format, SMALL_FILE_BYTES)
        if text is None:
            return None
        return parse_text(text, path, options, parse_whole)

    def stream(
        self, body: Readable, file: ClaimedFile, options: ReadOptions
    ) -> Generator[tuple[Rows, list[BadRecord]]]:
        """A large file's record batches (each with the bad records set aside next to it) as its
        body is read: parsed in a parser child if any."""
        if self._pool is not None:
            return self._pool.stream(body, file.file_path, options)
        source: Any = spooled(body) if options.format == "parquet" else body
        return stream_batches(source, file.file_path, options)

    def prefetched(
        self,
        files: list[ClaimedFile],
        pool: ThreadPoolExecutor,
        target: Callable[[], pa.Schema | None],
        ingested_at: pa.Scalar,
    ) -> Iterator[Read]:
        """Small files read in parallel (tiny ones in groups, see :meth:`read_group`), yielded in
        order, at most PREFETCH_BYTES in flight."""
        pending: deque[tuple[int, Future[list[Read]]]] = deque()
        in_flight = 0
        todo = iter(self.groups(files))
        nxt = next(todo, None)
        while nxt is not None or pending:
            while nxt is not None and (not pending or in_flight + _size(nxt) <= PREFETCH_BYTES):
                # The reader thread logs with this batch's run context (threads do not inherit it).
                read = contextvars.copy_context().run
                if len(nxt) == 1:
                    future = pool.submit(read, lambda f, t: [self.read_small(f, t, ingested_at)], nxt[0], target())
                else:
                    future = pool.submit(read, self.read_group, nxt, target(), ingested_at)
                pending.append((_size(nxt), future))
                in_flight += _size(nxt)
                nxt = next(todo, None)
            size, done = pending.popleft()
            in_flight -= size
            yield from done.result()

    def groups(self, files: list[ClaimedFile]) -> Iterator[list[ClaimedFile]]:
        """Consecutive tiny files in groups of up to GROUP_FILES and GROUP_BYTES (when parsing in
        parser processes); every other file alone."""
        group: list[ClaimedFile] = []
        for file in files:
            if self._pool is None or file.size > TINY_FILE_BYTES:
                if group:
                    yield group
                    group = []
                yield [file]
                continue
            if group and (len(group) == GROUP_FILES or _size(group) + file.size > GROUP_BYTES):
                yield group
                group = []
            group.append(file)
        if group:
            yield group


def _unwrap(first: tuple[Parsed]) -> tuple[pa.Table, list[BadRecord]] | None:
    (parsed,) = first
    if isinstance(parsed, PermanentFileError):
        raise parsed
    return parsed


def _size(files: list[ClaimedFile]) -> int:
    return sum(f.size for f in files)


def text_column(exc: Exception, options: ReadOptions) -> str | None:
    """The column to read as text when ``exc`` says a text file's inferred type did not hold."""
    if options.format == "parquet":
        return None
    column: str | None = None
    if isinstance(exc, ValueChangedError) and exc.retry_as_text:
        column = exc.column
    return column if column is not None and column not in options.text_columns else None
