"""File formats: CSV, JSON lines, JSON documents and Parquet, with compression chosen by extension.

Readers turn an input stream into Arrow record batches, streaming: a file of any size is read in
blocks. pyarrow's errors are translated here into :class:`PermanentFileError` with an error type
a user can act on.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from icefloe.errors import PermanentFileError
from icefloe.inference import TemporalColumns
from icefloe.schema import check_schema
from icefloe.settings import DEFAULT_MAX_NESTING

if TYPE_CHECKING:
    from icefloe.models import Ingestion
    from icefloe.settings import Settings

BLOCK_SIZE = 4 << 20  # bytes of text parsed per record batch of a streamed file
_CORRUPTION_HINTS = (
    "truncated",
    "zlib",
    "gzip",
    "zstd",
    "bz2",
    "decompress",
    "inflate",
    "lz4",
    "parquet",
    "magic bytes",
    "footer",
    "thrift",
)
_EMPTY_INPUT = "Empty CSV file"
_COMPRESSION_BY_SUFFIX = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
# A JSON line that is only `null`: not a record. pyarrow 26 adds an all-null row for it, and
# segfaults when it is the first line; refused before pyarrow sees it.
_NULL_LINE = re.compile(rb"(?:^|\n)[ \t\r]*null[ \t\r]*(?=\r?\n|$)")
_CSV_COLUMN = re.compile(r"In CSV column #(\d+): ")
_UTF16_32 = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


@dataclass(frozen=True)
class ReadOptions:
    """How an ingestion's files are parsed."""

    format: str  # csv | jsonl | json | parquet
    schema: pa.Schema | None = None  # None: inferred
    csv_delimiter: str = ","
    csv_quote_char: str = '"'
    csv_header: bool = True
    csv_null_values: tuple[str, ...] = ("",)  # field texts read as NULL (unquoted only)
    max_nesting: int = DEFAULT_MAX_NESTING
    max_line_bytes: int = 256 << 20  # longest line (record) of a streamed file (ICEFLOE_MAX_LINE_BYTES)
    block_size: int = BLOCK_SIZE  # of a streamed text file; raised when a line does not fit
    text_columns: frozenset[str] = frozenset()  # inferred columns read as text (see schema.ValueChangedError)
    timestamp_formats: tuple[str, ...] = ()  # strptime-style, besides ISO-8601 (see icefloe.inference)
    date_formats: tuple[str, ...] = ()
    # Cut the file into records and set the bad ones aside (badrecords.py), checking values against
    # ``target`` (the table's schema) when known; only after the fast parse failed on a record.
    salvage: bool = False
    target: pa.Schema | None = None

    @classmethod
    def for_ingestion(cls, ingestion: Ingestion, settings: Settings | None = None) -> ReadOptions:
        from icefloe.schema_documents import user_arrow_schema

        return cls(
            format=ingestion.format,
            schema=user_arrow_schema(ingestion.schema) if ingestion.schema else None,
            csv_delimiter=ingestion.csv_delimiter,
            csv_quote_char=ingestion.csv_quote_char,
            csv_header=ingestion.csv_header,
            csv_null_values=tuple(ingestion.csv_null_values) if ingestion.csv_null_values is not None else ("",),
            max_nesting=settings.max_nesting if settings else DEFAULT_MAX_NESTING,
            max_line_bytes=settings.max_line_bytes if settings else cls.max_line_bytes,
            timestamp_formats=tuple(ingestion.timestamp_formats or ()),
            date_formats=tuple(ingestion.date_formats or ()),
        )


class LineTooLongError(PermanentFileError):
    """A line (record) did not fit in the block size: the file can be read again with a larger one."""

    error_type = "LineTooLong"


def compression_of(path: str) -> str | None:
    lower = path.lower()
    for suffix, codec in _COMPRESSION_BY_SUFFIX.items():
        if lower.endswith(suffix):
            return codec
    return None


def _classify(exc: Exception, uri: str, *, declared_schema: bool = False) -> PermanentFileError:
    """One readable line and an error type for a pyarrow failure on ``uri``."""
    message = " ".join(str(exc).split())
    lower = message.lower()
    if "utf8" in lower or "utf-8" in lower or "invalid encoding" in lower:
        kind = "EncodingError"
    elif any(s in lower for s in _CORRUPTION_HINTS):
        kind = "CorruptFile"
    elif "changed from" in lower and declared_schema:
        kind = "SchemaMismatch"  # JSON: "Column(/id) changed from number to string" against the declared type
    elif "csv" in lower and ("columns" in lower or "parse" in lower):
        kind = "MalformedCSV"
    elif "json" in lower:
        kind = "MalformedJSON"
    elif "conversion" in lower or "failed to parse" in lower or "out of range" in lower or "decimal" in lower:
        kind = "SchemaMismatch"
    else:
        kind = "UnreadableFile"
    if "changed from" in lower and not declared_schema:
        message += " (types are inferred from the first block of a file; declare them with --schema)"
    if len(message) > 500:
        message = message[:500] + "…"
    if kind == "MalformedJSON" and "changed from object to array" in lower:
        message += " (one JSON document holding an array of objects? --format json reads those)"
    return PermanentFileError(f"{uri}: {message}", error_type=kind)


@contextmanager
def translated_errors(uri: str, *, declared_schema: bool = False) -> Iterator[None]:
    """Turn pyarrow's parse and decompression errors into :class:`PermanentFileError`."""
    try:
        yield
    except PermanentFileError:
        raise
    except RecursionError as exc:
        raise PermanentFileError(f"{uri}: data nested too deeply to convert", error_type="InvalidSchema") from exc
    except (pa.ArrowException, OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise _classify(exc, uri, declared_schema=declared_schema) from exc


def check_text_start(head: bytes, uri: str) -> None:
    """Refuse UTF-16/UTF-32 text (pyarrow would call it malformed): the README promises EncodingError."""
    if head.startswith(_UTF16_32) or b"\x00" in head[:4]:
        raise PermanentFileError(f"{uri}: not UTF-8 text (UTF-16 or UTF-32?)", error_type="EncodingError")


def check_json_lines(data: bytes, uri: str, first_line: int = 1) -> None:
    """Refuse a JSON line that is only ``null`` (see ``_NULL_LINE``), naming its line number."""
    if b"null" not in data:
        return
    found = _NULL_LINE.search(data)
    if found is not None:
        line = first_line + data.count(b"\n", 0, found.start() + 1)
        raise PermanentFileError(
            f"{uri}: line {line} is `null`, not a JSON object (a record)", error_type="MalformedJSON"
        )


class _GuardedStream(io.RawIOBase):
    """The decompressed text of a streamed file, checked as pyarrow reads it (see :func:`check_text_start`
    and :func:`check_json_lines`), keeping the first line for naming CSV columns."""

    def __init__(self, inner: pa.NativeFile, uri: str, json_lines: bool) -> None:
        super().__init__()
        self.inner, self.uri, self.json_lines = inner, uri, json_lines
        self.first_chunk = b""
        self._tail = b""  # the unfinished last line of the previous chunk
        self._line = 1  # line number of the first line of _tail

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.inner.read(size if size is not None and size >= 0 else None)
        if not self.first_chunk:
            self.first_chunk = data[:65_536]
            check_text_start(data, self.uri)
        if self.json_lines and data:
            text = self._tail + data
            cut = text.rfind(b"\n") + 1
            if cut:
                check_json_lines(text[:cut], self.uri, self._line)
                self._line += text.count(b"\n", 0, cut)
            self._tail = text[cut:][-(1 << 20) :]  # a null line is short: the tail need not be whole
        elif self.json_lines and self._tail:
            check_json_lines(self._tail, self.uri, self._line)
            self._tail = b""
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _header_names(head: bytes, options: ReadOptions) -> list[str]:
    """The column names of a CSV file as pyarrow sees them (for naming a column in an error)."""
    if not options.csv_header:
        return options.schema.names if options.schema is not None else []
    line = head.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    return next(csv.reader([line], delimiter=options.csv_delimiter, quotechar=options.csv_quote_char), [])


def _csv_error(
    exc: pa.ArrowInvalid, uri: str, names: list[str], options: ReadOptions, rows_before: int | None
) -> PermanentFileError:
    """A CSV conversion error naming the column (pyarrow says "CSV column #3"), and for a streamed
    file the row its block starts after: its types were inferred from the first block only."""
    message = " ".join(str(exc).split())
    found = _CSV_COLUMN.search(message)
    if found is None or int(found.group(1)) >= len(names):
        return _classify(exc, uri, declared_schema=options.schema is not None)
    column = names[int(found.group(1))]
    detail = message[found.end() :][:300]
    declared = options.schema is not None and column in options.schema.names
    if rows_before is not None and not declared:
        detail += (
            f" (in the rows after row {rows_before}: the types of a file streamed in blocks are inferred"
            " from its first block; declare this column's type with --schema)"
        )
    return PermanentFileError(f"{uri}: column {column!r}: {detail}", error_type="SchemaMismatch")


def _csv_batches(stream: Any, options: ReadOptions, block_size: int) -> pa.RecordBatchReader:
    schema = options.schema
    read = pacsv.ReadOptions(
        block_size=block_size,
        use_threads=False,
        autogenerate_column_names=not options.csv_header and schema is None,
        column_names=None if options.csv_header or schema is None else schema.names,
    )
    parse = pacsv.ParseOptions(delimiter=options.csv_delimiter, quote_char=options.csv_quote_char)
    types: dict[str, pa.DataType] = {f.name: f.type for f in schema} if schema is not None else {}
    types.update({name: pa.string() for name in options.text_columns})
    convert = pacsv.ConvertOptions(
        column_types=types or None,
        # Like the warehouses: only what the user lists is NULL (default: an empty unquoted field);
        # pyarrow's default list (NA, N/A, nan, null, …) would turn "NA" (Namibia) into NULL.
        null_values=list(options.csv_null_values),
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        timestamp_parsers=[pacsv.ISO8601, *options.timestamp_formats],
    )
    return pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)


def _json_batches(stream: Any, options: ReadOptions, block_size: int) -> pa.RecordBatchReader:
    if options.schema is not None:
        # --schema names only some columns (hints): the others are inferred.
        parse = pajson.ParseOptions(explicit_schema=options.schema, unexpected_field_behavior="infer")
    elif options.text_columns:
        text = pa.schema([(name, pa.string()) for name in sorted(options.text_columns)])
        parse = pajson.ParseOptions(explicit_schema=text, unexpected_field_behavior="infer")
    else:
        parse = pajson.ParseOptions()
    return pajson.open_json(
        stream, read_options=pajson.ReadOptions(use_threads=False, block_size=block_size), parse_options=parse
    )


def record_batches(
    source: bytes | IO[bytes] | pa.NativeFile, path: str, options: ReadOptions
) -> Generator[pa.RecordBatch]:
    """Stream the record batches of one file; raises :class:`PermanentFileError` on bad content.

    ``source`` is either the whole (decompressed) file as bytes — parsed as one block, so types are
    inferred from the whole file and any line fits — or a stream, parsed in ``options.block_size``
    blocks (decompressed here by extension); it must be seekable for Parquet (see :func:`spooled`).
    An empty text file yields nothing (0 records is a success, not an error).
    """
    uri = path
    with translated_errors(uri, declared_schema=options.schema is not None):
        if options.format == "parquet":
            parquet = pq.ParquetFile(pa.BufferReader(source) if isinstance(source, bytes) else source)
            check_schema(parquet.schema_arrow, uri, options.max_nesting)
            yield from parquet.iter_batches(batch_size=65_536)
            return
        stream: Any
        if isinstance(source, bytes) and options.format != "json":
            check_text_start(source, uri)
            if options.format == "jsonl":
                check_json_lines(source, uri)
            head, block_size, stream = source[:65_536], max(BLOCK_SIZE, len(source) + 1), pa.BufferReader(source)
            guarded: _GuardedStream | None = None
        else:
            native = (
                pa.BufferReader(source)
                if isinstance(source, bytes)
                else source
                if isinstance(source, pa.NativeFile)
                else pa.PythonFile(source, mode="r")
            )
            codec = compression_of(path)
            if codec is not None and not isinstance(source, bytes):
                native = pa.CompressedInputStream(native, codec)
            if options.format == "json":
                # A document (an array of objects, or one object) as JSON lines, converted as it streams.
                native = pa.PythonFile(JsonDocumentLines(native, uri), mode="r")
            guarded = _GuardedStream(native, uri, json_lines=options.format in ("jsonl", "json"))
            block_size = options.block_size
            if isinstance(source, bytes):
                block_size = max(block_size, 2 * len(source) + 1)  # the whole document: one block
            head, stream = b"", pa.PythonFile(guarded, mode="r")
        rows = 0
        try:
            try:
                reader = (
                    _csv_batches(stream, options, block_size)
                    if options.format == "csv"
                    else _json_batches(stream, options, block_size)
                )
            except pa.ArrowInvalid as exc:
                # An empty text file (or only blank lines) is a valid file of 0 records.
                if _EMPTY_INPUT in str(exc) or "Empty JSON stream" in str(exc):
                    return
                raise
            check_schema(reader.schema, uri, options.max_nesting)
            temporal = TemporalColumns(
                fmt=options.format,
                skip=frozenset(options.schema.names if options.schema is not None else ()) | options.text_columns,
                timestamp_formats=options.timestamp_formats,
                date_formats=options.date_formats,
            )
            for batch in reader:
                _check_text_columns(batch, options, uri)
                if not head and guarded is not None:
                    head = guarded.first_chunk
                batch = temporal.apply(batch, head, uri)
                rows += batch.num_rows
                yield batch
        except pa.ArrowInvalid as exc:
            if "straddling" in str(exc) or "straddles" in str(exc):
                raise LineTooLongError(
                    f"{uri}: a line is longer than {block_size >> 20} MiB", error_type="LineTooLong"
                ) from exc
            if options.format == "csv":
                if not head and guarded is not None:
                    head = guarded.first_chunk
                streamed = None if isinstance(source, bytes) else rows
                raise _csv_error(exc, uri, _header_names(head, options), options, streamed) from exc
            raise


def expanded(data: bytes, path: str, fmt: str, limit: int) -> bytes | None:
    """A fetched text file decompressed (by extension), or None when it expands beyond ``limit``
    bytes: such a file is streamed instead, so a small decompression bomb cannot fill memory."""
    codec = compression_of(path)
    if codec is None or fmt == "parquet":
        return data
    with translated_errors(path):
        text: bytes = pa.CompressedInputStream(pa.BufferReader(data), codec).read(limit + 1)
    return None if len(text) > limit else text


def parse_whole(data: bytes, path: str, options: ReadOptions) -> pa.Table:
    """The whole (decompressed) file as one Arrow table; see :func:`record_batches`."""
    batches = list(record_batches(data, path, options))
    schema = batches[0].schema if batches else (options.schema or pa.schema([]))
    return pa.Table.from_batches(batches, schema=schema)


# Beyond 2^53 a double is not every integer: a float column holding such an integral value was most
# likely an integer too large for a long (pyarrow then infers the whole column as double, rounding).
_EXACT_FLOAT_INT = 2**53


def _check_text_columns(batch: pa.RecordBatch, options: ReadOptions, uri: str) -> None:
    """Refuse invalid UTF-8 (pyarrow reads it in CSV as binary, and in JSON as invalid strings), and
    integers that inference turned into rounded floats."""
    if options.format in ("jsonl", "json"):
        batch.validate(full=True)  # raises ArrowInvalid "Invalid UTF8 ..." → EncodingError
    for field in batch.schema:
        declared_here = options.schema is not None and field.name in options.schema.names
        if pa.types.is_floating(field.type) and not declared_here:
            values = batch.column(batch.schema.get_field_index(field.name))
            suspect = pc.and_(pc.greater(pc.abs(values), _EXACT_FLOAT_INT), pc.equal(pc.floor(values), values))
            row = pc.index(suspect, True).as_py()
            if row >= 0:
                raise PermanentFileError(
                    f"{uri}: column {field.name!r} holds {values[row].as_py()!r} (row {row + 1} of its block): an "
                    "integer too large for a long, read as a rounded float; declare the column with --schema "
                    "(e.g. decimal(38,0) or string) to keep it as written",
                    error_type="SchemaMismatch",
                )
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            declared = (
                options.schema.field(field.name).type
                if options.schema is not None and field.name in options.schema.names
                else None
            )
            if declared is None or not pa.types.is_binary(declared):
                raise PermanentFileError(
                    f"{uri}: column {field.name!r} is not valid UTF-8 text", error_type="EncodingError"
                )


_JSON_SPECIAL = re.compile(rb'[\\"\[\]{},\r\n]')


class JsonDocumentLines(io.RawIOBase):
    """A JSON document holding an array of objects (``[{…}, {…}]``, vega's ``cars.json``) or one
    object, read as JSON lines: one object per line, for pyarrow's streaming JSON reader.

    Streams: the input is read 1 MiB at a time and only the state of the scan (inside a string,
    after a backslash, nesting depth) is kept, so a large array stays within the reader's memory
    bound. Commas between the array's elements become newlines, newlines inside an object (a
    pretty-printed document) become spaces; the brackets of the array are dropped.
    """

    def __init__(self, raw: Any, uri: str) -> None:
        self._raw = raw
        self._uri = uri
        self._pending = b""
        self._depth = 0  # brackets open: in an array, 1 is between its elements
        self._array: bool | None = None  # None until the first non-blank byte
        self._in_string = False
        self._escaped = False
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._done:
            chunk = self._raw.read(1 << 20)
            if not chunk:
                self._done = True
                if self._depth != 0 or self._in_string:
                    raise PermanentFileError(f"{self._uri}: truncated JSON document", error_type="MalformedJSON")
                break
            self._pending = self._convert(bytes(chunk))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _convert(self, chunk: bytes) -> bytes:
        out = bytearray()
        start = 0
        if self._array is None:
            stripped = chunk.lstrip()
            if not stripped:
                return b""
            if stripped[:1] not in (b"[", b"{"):
                raise PermanentFileError(
                    f"{self._uri}: a JSON document must hold an array of objects or one object",
                    error_type="MalformedJSON",
                )
            self._array = stripped[:1] == b"["
            start = len(chunk) - len(stripped)
        for match in _JSON_SPECIAL.finditer(chunk, start):
            pos, char = match.start(), match.group()
            if self._escaped:
                self._escaped = False
                continue
            if self._in_string:
                if char == b"\\":
                    self._escaped = True
                elif char == b'"':
                    self._in_string = False
                continue
            out += chunk[start:pos]
            start = pos + 1
            if char == b'"':
                self._in_string = True
                out += char
            elif char in (b"\r", b"\n"):
                out += b" "
            elif char in (b"[", b"{"):
                self._depth += 1
                if not (self._array and self._depth == 1):
                    out += char
            elif char in (b"]", b"}"):
                self._depth -= 1
                if self._array and self._depth == 0:
                    out += b"\n"
                else:
                    out += char
                    if not self._array and self._depth == 0:
                        out += b"\n"
            elif char == b",":
                out += b"\n" if self._array and self._depth == 1 else char
        out += chunk[start:]
        return bytes(out)


def spooled(body: Any, max_in_memory: int = 64 << 20) -> IO[bytes]:
    """Copy a non-seekable body into a seekable file (memory up to ``max_in_memory``, then disk)."""
    spool = tempfile.SpooledTemporaryFile(max_size=max_in_memory)  # noqa: SIM115 - returned to caller
    while chunk := body.read(1 << 20):
        spool.write(chunk)
    spool.seek(0)
    return spool
