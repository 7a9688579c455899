"""File formats: CSV, JSON lines, JSON documents and Parquet, with compression chosen by extension.

Readers turn an input stream into Arrow record batches, streaming: a file of any size is read in
blocks. pyarrow's errors are translated here into :class:`PermanentFileError` with an error type
a user can act on.
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from icefloe.errors import PermanentFileError

if TYPE_CHECKING:
    from icefloe.models import Ingestion

BLOCK_SIZE = 4 << 20  # bytes of text parsed per record batch
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


@dataclass(frozen=True)
class ReadOptions:
    """How an ingestion's files are parsed."""

    format: str  # csv | jsonl | json | parquet
    schema: pa.Schema | None = None  # None: inferred
    csv_delimiter: str = ","
    csv_quote_char: str = '"'
    csv_header: bool = True

    @classmethod
    def for_ingestion(cls, ingestion: Ingestion) -> ReadOptions:
        from icefloe.schema import user_arrow_schema

        return cls(
            format=ingestion.format,
            schema=user_arrow_schema(ingestion.schema) if ingestion.schema else None,
            csv_delimiter=ingestion.csv_delimiter,
            csv_quote_char=ingestion.csv_quote_char,
            csv_header=ingestion.csv_header,
        )


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
    elif "conversion" in lower or "failed to parse" in lower or "out of range" in lower:
        kind = "SchemaMismatch"
    else:
        kind = "UnreadableFile"
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
    except (pa.ArrowException, OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise _classify(exc, uri, declared_schema=declared_schema) from exc


def _csv_batches(stream: pa.NativeFile, options: ReadOptions) -> pa.RecordBatchReader:
    schema = options.schema
    read = pacsv.ReadOptions(
        block_size=BLOCK_SIZE,
        use_threads=False,
        autogenerate_column_names=not options.csv_header and schema is None,
        column_names=None if options.csv_header or schema is None else schema.names,
    )
    parse = pacsv.ParseOptions(delimiter=options.csv_delimiter, quote_char=options.csv_quote_char)
    convert = pacsv.ConvertOptions(
        column_types={f.name: f.type for f in schema} if schema is not None else None,
        strings_can_be_null=True,
        timestamp_parsers=[pacsv.ISO8601],
    )
    return pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)


def _json_batches(stream: pa.NativeFile, options: ReadOptions) -> pa.RecordBatchReader:
    parse = (
        pajson.ParseOptions(explicit_schema=options.schema, unexpected_field_behavior="ignore")
        if options.schema is not None
        else pajson.ParseOptions()
    )
    return pajson.open_json(
        stream, read_options=pajson.ReadOptions(use_threads=False, block_size=BLOCK_SIZE), parse_options=parse
    )


def record_batches(source: IO[bytes] | pa.NativeFile, path: str, options: ReadOptions) -> Iterator[pa.RecordBatch]:
    """Stream the record batches of one file; raises :class:`PermanentFileError` on bad content.

    ``source`` must be seekable for Parquet (see :func:`spooled`); text formats need only read().
    An empty text file yields nothing (0 records is a success, not an error).
    """
    uri = path
    with translated_errors(uri, declared_schema=options.schema is not None):
        if options.format == "parquet":
            parquet = pq.ParquetFile(source)
            columns = [n for n in options.schema.names if n in parquet.schema_arrow.names] if options.schema else None
            yield from parquet.iter_batches(batch_size=65_536, columns=columns)
            return
        stream: pa.NativeFile = source if isinstance(source, pa.NativeFile) else pa.PythonFile(source, mode="r")
        codec = compression_of(path)
        if codec is not None:
            stream = pa.CompressedInputStream(stream, codec)
        if options.format == "json":
            # A document (an array of objects, or one object) as JSON lines, converted as it streams.
            stream = pa.PythonFile(JsonDocumentLines(stream, uri), mode="r")
        try:
            reader = _csv_batches(stream, options) if options.format == "csv" else _json_batches(stream, options)
        except pa.ArrowInvalid as exc:
            # An empty text file (or only blank lines) is a valid file of 0 records.
            if _EMPTY_INPUT in str(exc) or "Empty JSON stream" in str(exc):
                return
            raise
        for batch in reader:
            _check_text_columns(batch, options, uri)
            yield batch


def _check_text_columns(batch: pa.RecordBatch, options: ReadOptions, uri: str) -> None:
    """Refuse invalid UTF-8: pyarrow reads it in CSV as binary, and in JSON as invalid strings."""
    if options.format in ("jsonl", "json"):
        batch.validate(full=True)  # raises ArrowInvalid "Invalid UTF8 ..." → EncodingError
    for field in batch.schema:
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
