"""Bad records: lines or rows a file can do without (``--on-bad-record skip|quarantine``).

A bad record is a JSON line that is not valid JSON (or not an object), a CSV row with the wrong
number of fields, or a value that cannot be converted to its column's type. The fast path never
looks for them: a file is parsed whole, vectorised, by pyarrow. Only when that fails with a
record-level error (:func:`record_level`) is the file *salvaged*: cut into records (lines; CSV rows,
quoted newlines included), parsed in chunks that are halved around the failures until each bad
record stands alone. A file with b bad records of n costs about ``b · log2(n)`` extra parses.

Runs where the parsing runs: in a parser child (``isolation.py``) or, with
``ICEFLOE_PARSER_PROCESSES=0``, in the worker. Pure apart from pyarrow.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from icefloe.errors import ConfigurationError, PermanentFileError

if TYPE_CHECKING:
    from icefloe.formats import ReadOptions

POLICIES = ("fail-file", "skip", "quarantine")
# pyarrow's and our own error types for something wrong with one record, not the whole file.
RECORD_LEVEL = frozenset({"MalformedJSON", "MalformedCSV", "SchemaMismatch", "EncodingError"})
SALVAGE_CHUNK_BYTES = 8 << 20  # text salvaged at a time (a streamed file is salvaged chunk by chunk)
FIRST_ERRORS = 5  # bad records named in a file's error message or `icefloe validate`
MAX_RAW_CHARS = 1 << 20  # longest `_raw` kept for one record (the rest is cut, marked with …)
_LIMIT = re.compile(r"^\s*(\d+)\s*(%?)\s*$")


@dataclass(frozen=True)
class BadRecord:
    """One record set aside: where it was in its file, why, and its text as written."""

    row_number: int  # 1-based line of the file (CSV: the row's first line; the header is line 1)
    error: str
    raw: str


@dataclass(frozen=True)
class Limit:
    """``--max-bad-records``: a count (``N``) or a share of the file's records (``P%``)."""

    value: int
    percent: bool

    @classmethod
    def parse(cls, text: str | None) -> Limit | None:
        """``"10"`` → 10 records, ``"5%"`` → 5 % of a file's records; None or ``""``: no limit."""
        if text is None or not str(text).strip():
            return None
        found = _LIMIT.match(str(text))
        if found is None or (found.group(2) and int(found.group(1)) > 100):
            raise ConfigurationError(f"--max-bad-records {text!r}: give a count (10) or a percentage (5%)")
        return cls(int(found.group(1)), bool(found.group(2)))

    def exceeded(self, bad: int, total: int) -> bool:
        """More bad records than allowed among ``total`` (good + bad) records of one file."""
        if self.percent:
            return bad * 100 > self.value * total
        return bad > self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


@dataclass(frozen=True)
class Policy:
    """An ingestion's ``--on-bad-record`` and ``--max-bad-records``, as the engine applies them."""

    on_bad_record: str = "fail-file"
    limit: Limit | None = None

    @classmethod
    def of(cls, on_bad_record: str, max_bad_records: str | None) -> Policy:
        return cls(on_bad_record, Limit.parse(max_bad_records))

    @property
    def quarantines(self) -> bool:
        return self.on_bad_record == "quarantine"

    def salvages(self, exc: BaseException, options: ReadOptions) -> bool:
        """Whether to read a file again record by record after ``exc``: the policy allows it, the
        error may be one record's, and this is not already that second reading."""
        if self.on_bad_record == "fail-file" or options.salvage or options.format == "parquet":
            return False  # Parquet has no record boundaries to cut at: its errors are the file's
        return record_level(exc)

    def check(self, path: str, bad: list[BadRecord], good: int) -> None:
        """Raise ``TooManyBadRecords`` when a file's bad records are over the limit."""
        if bad and self.limit is not None and self.limit.exceeded(len(bad), good + len(bad)):
            raise too_many(path, bad, good + len(bad), self.limit)


def check_policy(on_bad_record: str, max_bad_records: str | None) -> str | None:
    """Validate an ingestion's choice (one line naming the option); returns the limit as stored."""
    if on_bad_record not in POLICIES:
        raise ConfigurationError(f"--on-bad-record {on_bad_record!r}: choose one of {', '.join(POLICIES)}")
    limit = Limit.parse(max_bad_records)
    if limit is not None and on_bad_record == "fail-file":
        raise ConfigurationError("--max-bad-records needs --on-bad-record skip or quarantine")
    return None if limit is None else str(limit)


def too_many(path: str, bad: list[BadRecord], total: int | None, limit: Limit) -> PermanentFileError:
    """The error of a file over its limit (``total``: its records, None when it was not read to
    the end), naming its first bad records."""
    first = "; ".join(f"line {b.row_number}: {b.error}" for b in bad[:FIRST_ERRORS])
    of = f" of {total}" if total is not None else ""
    return PermanentFileError(
        f"{path}: {len(bad)} bad record(s){of}, over --max-bad-records {limit}; {first}",
        error_type="TooManyBadRecords",
    )


def record_level(exc: BaseException) -> bool:
    """Whether a file's parse error may come from single records (worth salvaging the file)."""
    return isinstance(exc, PermanentFileError) and exc.error_type in RECORD_LEVEL


# --------------------------------------------------------------------------- records of a text


@dataclass(frozen=True)
class _Unit:
    number: int  # 1-based line where the record starts
    raw: bytes  # its text, line ends included
    error: str | None = None  # bad already, by a cheap check in Python (no pyarrow parse needed)


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines (with their ``\\n``) of a text given in chunks."""
    tail = b""
    for chunk in chunks:
        data = tail + chunk
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            yield data[start : end + 1]
            start = end + 1
        tail = data[start:]
    if tail:
        yield tail


def units(lines: Iterable[bytes], options: ReadOptions) -> tuple[bytes, Iterator[_Unit]]:
    """(the CSV header line, or b""; the records of a text, in order). Blank lines are no records."""
    it = iter(lines)
    if options.format != "csv":
        return b"", (_Unit(n, raw, _json_error(raw)) for n, raw in enumerate(it, start=1) if raw.strip())
    header = next(it, b"") if options.csv_header else b""
    if header:
        width: int | None = len(next(_csv_reader([header.decode("utf-8", "replace")], options), []))
    else:
        width = len(options.schema) if options.schema is not None else None  # else: the first row's
    return header, _csv_units(it, options, 2 if options.csv_header else 1, width)


def _json_error(raw: bytes) -> str | None:
    """Why a line is surely no JSON record (Python's parser is a cheap first look; pyarrow has the
    last word on the lines that pass), or None."""
    try:
        value = json.loads(raw)
    except UnicodeDecodeError:
        return "not valid UTF-8"
    except ValueError as exc:
        return f"JSON parse error: {exc}"
    return None if isinstance(value, dict) else "not a JSON object (a record)"


def _csv_reader(lines: Iterable[str], options: ReadOptions) -> Iterator[list[str]]:
    return csv.reader(lines, delimiter=options.csv_delimiter, quotechar=options.csv_quote_char)


def _csv_units(lines: Iterator[bytes], options: ReadOptions, first_line: int, width: int | None) -> Iterator[_Unit]:
    """CSV rows with their exact text: Python's csv module says where a row (quoted newlines and
    all) ends; the bytes of those lines are the record. A row of another ``width`` is bad."""
    taken: list[bytes] = []

    def feed() -> Iterator[str]:
        for line in lines:
            taken.append(line)
            yield line.decode("utf-8", "replace")

    reader = _csv_reader(feed(), options)
    number = first_line
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            row = []  # e.g. a NUL byte: a record of its own, for pyarrow to judge
        # csv reads no further than the row it returns: the lines taken since the last row are it.
        raw = b"".join(taken)
        if raw.strip():
            width = len(row) if width is None and row else width
            wrong = row and len(row) != width
            yield _Unit(number, raw, f"expected {width} columns, got {len(row)}" if wrong else None)
        number += len(taken)
        taken.clear()
    if taken and b"".join(taken).strip():
        yield _Unit(number, b"".join(taken))


def chunked(records: Iterable[_Unit], size: int = SALVAGE_CHUNK_BYTES) -> Iterator[list[_Unit]]:
    group: list[_Unit] = []
    nbytes = 0
    for unit in records:
        group.append(unit)
        nbytes += len(unit.raw)
        if nbytes >= size:
            yield group
            group, nbytes = [], 0
    if group:
        yield group


# --------------------------------------------------------------------------- salvaging


_ROW_OF_CHUNK = re.compile(r"\.? in row \d+$")  # pyarrow's row within the parsed chunk: not the file's


def _message(exc: BaseException, path: str) -> str:
    text = " ".join(str(exc).split()).removeprefix(f"{path}: ")
    return _ROW_OF_CHUNK.sub("", text)


def _bad(unit: _Unit, error: str) -> BadRecord:
    text = unit.raw.decode("utf-8", "replace").rstrip("\r\n")
    return BadRecord(unit.number, error, text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "…")


def salvage(
    header: bytes,
    group: list[_Unit],
    path: str,
    options: ReadOptions,
    parse: Callable[[bytes, str, ReadOptions], pa.Table],
) -> tuple[pa.Table | None, list[BadRecord]]:
    """The good records of ``group`` as one table, and the bad ones (in file order).

    ``parse`` is the fast whole-text parser (:func:`icefloe.formats.parse_whole`); options.target,
    when set, is the table's schema: a value its column's type cannot hold makes its record bad.
    """
    plain = replace(options, salvage=False, target=None)
    good: list[tuple[pa.Table, list[_Unit]]] = []
    bad: list[tuple[int, BadRecord]] = []

    def text(us: list[_Unit]) -> bytes:
        body = b"".join(u.raw if u.raw.endswith(b"\n") else u.raw + b"\n" for u in us)
        return header + body

    def split(us: list[_Unit]) -> None:
        try:
            table = parse(text(us), path, plain)
        except PermanentFileError as exc:
            if not record_level(exc):
                raise
            if len(us) == 1:
                bad.append((us[0].number, _bad(us[0], _message(exc, path))))
                return
            half = len(us) // 2
            split(us[:half])
            split(us[half:])
            return
        if table.num_rows != len(us):  # one record, one row: anything else is not ours to split
            raise PermanentFileError(f"{path}: records and rows do not line up", error_type="UnreadableFile")
        good.append((table, us))

    bad.extend((u.number, _bad(u, u.error)) for u in group if u.error is not None)
    rest = [u for u in group if u.error is None]
    if rest:
        split(rest)
    if not good:
        return None, [b for _, b in sorted(bad, key=lambda x: x[0])]
    combined, rows = _combine(good, path, bad)
    if options.target is not None:
        combined, rows = _drop_unconvertible(combined, rows, options.target, bad)
    bad.sort(key=lambda x: x[0])
    return combined, [b for _, b in bad]


def _combine(
    good: list[tuple[pa.Table, list[_Unit]]], path: str, bad: list[tuple[int, BadRecord]]
) -> tuple[pa.Table, list[_Unit]]:
    """One table of the parsed chunks. Chunks infer their types apart: where they disagree beyond
    what Arrow promotes (int and double → double), the first chunk's type holds and rows whose
    value it cannot hold are bad."""
    rows = [u for _, us in good for u in us]
    try:
        return pa.concat_tables([t for t, _ in good], promote_options="permissive"), rows
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    types: dict[str, pa.DataType] = {}
    for table, _ in good:
        for field in table.schema:
            if field.name not in types and not pa.types.is_null(field.type):
                types[field.name] = field.type
    schema = pa.schema(list(types.items()))
    tables, kept = [], []
    for table, us in good:
        table, us = _drop_unconvertible(table, us, schema, bad)
        columns = {n: table.column(n) for n in table.schema.names}
        arrays = [
            columns[f.name].cast(f.type) if f.name in columns else pa.nulls(table.num_rows, f.type) for f in schema
        ]
        tables.append(pa.Table.from_arrays(arrays, schema=schema))
        kept.extend(us)
    return pa.concat_tables(tables), kept


def _drop_unconvertible(
    table: pa.Table, rows: list[_Unit], target: pa.Schema, bad: list[tuple[int, BadRecord]]
) -> tuple[pa.Table, list[_Unit]]:
    """Rows of ``table`` whose values the ``target`` types hold; the others become bad records."""
    failed: dict[int, str] = {}
    for field in target:
        idx = table.schema.get_field_index(field.name)
        if idx == -1 or table.schema.field(idx).type == field.type:
            continue
        column = table.column(idx).combine_chunks()
        rows_failing = _failing(column, field.type)
        if len(rows_failing) == len(column) > 1:
            # No value of the column fits: the file's schema differs, not some of its records.
            raise PermanentFileError(
                f"column {field.name!r}: none of its {len(column)} values converts to {field.type}",
                error_type="SchemaMismatch",
            )
        for row in rows_failing:
            value = column[row].as_py()
            failed.setdefault(row, f"column {field.name!r}: {value!r} cannot be converted to {field.type}")
    if not failed:
        return table, rows
    for row, error in failed.items():
        bad.append((rows[row].number, _bad(rows[row], error)))
    keep = pa.array([i not in failed for i in range(table.num_rows)])
    return table.filter(keep), [u for i, u in enumerate(rows) if i not in failed]


def _failing(column: pa.Array, to: pa.DataType) -> list[int]:
    """Positions whose value a safe cast to ``to`` refuses, found by halving (cheap when few)."""
    out: list[int] = []

    def ok(lo: int, hi: int) -> bool:
        try:
            pc.cast(column.slice(lo, hi - lo), to, safe=True)
            return True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return False

    def walk(lo: int, hi: int) -> None:
        if hi <= lo or ok(lo, hi):
            return
        if hi - lo == 1:
            out.append(lo)
            return
        mid = (lo + hi) // 2
        walk(lo, mid)
        walk(mid, hi)

    walk(0, len(column))
    return out


def text_chunks(source: bytes | IO[bytes] | Any, path: str, options: ReadOptions) -> Iterator[bytes]:
    """The decompressed text of a file (bytes already decompressed, or a stream decompressed by
    extension), as JSON lines for a JSON document."""
    from icefloe.formats import JsonDocumentLines, compression_of

    if isinstance(source, bytes):
        native: Any = pa.BufferReader(source)
    else:
        native = source if isinstance(source, pa.NativeFile) else pa.PythonFile(source, mode="r")
        codec = compression_of(path)
        if codec is not None:
            native = pa.CompressedInputStream(native, codec)
    if options.format == "json":
        native = JsonDocumentLines(native, path)
    while chunk := native.read(1 << 20):
        yield bytes(chunk)


def salvaged_tables(
    source: bytes | IO[bytes] | Any,
    path: str,
    options: ReadOptions,
    parse: Callable[[bytes, str, ReadOptions], pa.Table],
    chunk_bytes: int = SALVAGE_CHUNK_BYTES,
) -> Iterator[tuple[pa.Table | None, list[BadRecord]]]:
    """A file salvaged chunk by chunk: (its good records as a table or None, its bad records)."""
    jsonl = replace(options, format="jsonl") if options.format == "json" else options
    header, records = units(_lines(text_chunks(source, path, options)), jsonl)
    if options.format == "json":  # an element as written, without the blanks around it in the array
        records = (_Unit(u.number, u.raw.strip()) for u in records)
    for group in chunked(records, chunk_bytes):
        yield salvage(header, group, path, jsonl, parse)


def parse_text(
    text: bytes, path: str, options: ReadOptions, parse: Callable[[bytes, str, ReadOptions], pa.Table]
) -> tuple[pa.Table, list[BadRecord]]:
    """A whole file's rows (and its bad records when salvaging: ``options.salvage``)."""
    return parse_salvaged(text, path, options, parse) if options.salvage else (parse(text, path, options), [])


def stream_batches(
    source: Any, path: str, options: ReadOptions
) -> Generator[tuple[pa.RecordBatch | pa.Table, list[BadRecord]]]:
    """A streamed file's batches, each with the bad records set aside next to it (when salvaging)."""
    from icefloe.formats import parse_whole, record_batches

    if not options.salvage:
        for batch in record_batches(source, path, options):
            yield batch, []
        return
    for table, bad in salvaged_tables(source, path, options, parse_whole):
        yield (table if table is not None else pa.table({})), bad


def parse_salvaged(
    text: bytes, path: str, options: ReadOptions, parse: Callable[[bytes, str, ReadOptions], pa.Table]
) -> tuple[pa.Table, list[BadRecord]]:
    """A whole (decompressed) file salvaged: its good records as one table, and its bad ones."""
    tables: list[pa.Table] = []
    bad: list[BadRecord] = []
    for table, rejected in salvaged_tables(text, path, options, parse, chunk_bytes=len(text) + 1):
        if table is not None:
            tables.append(table)
        bad.extend(rejected)
    return (tables[0] if tables else pa.table({})), bad
