"""`icefloe validate NAME`: a dry run over the files not yet ingested (new or changed in the
source, DISCOVERED, FAILED, HELD).

Per file: its records, its bad records (the first few, with their lines) and the columns it would
add to the table. Reads the objects (through the parser children, as a run does) and the table's
schema, and lists the source; commits nothing, creates no table, records nothing in the ledger.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlalchemy import text

from icefloe import evolution, isolation, tables
from icefloe.badrecords import FIRST_ERRORS, BadRecord, Policy, parse_text, record_level, stream_batches
from icefloe.discovery import Filter, listing_pages
from icefloe.errors import FileError, IcefloeError, LedgerUnavailableError
from icefloe.formats import ReadOptions, expanded, parse_whole
from icefloe.schema import ValueChangedError, arrow_target, conform, normalise_type
from icefloe.stores import parse_source

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from icefloe.models import Ingestion
    from icefloe.runtime import Runtime

log = logging.getLogger(__name__)

# Files a run would still read; HELD (waiting for a schema approval) once that status exists.
PENDING_STATUSES = ("DISCOVERED", "FAILED", "HELD")
SMALL_FILE_BYTES = 32 << 20  # as the arrow engine: larger files are streamed


def pending_files(rt: Runtime, ingestion: Ingestion, limit: int) -> list[tuple[str, str, int, str]]:
    """(path, etag, size, status) of the files a run would read, at most ``limit``: the source is
    listed (read-only: nothing is recorded) and each object looked up in the ledger; one not in it,
    or changed since, is ``NEW``; one DISCOVERED, FAILED or HELD keeps its status."""
    location = parse_source(ingestion.source)
    flt = Filter(location.prefix, ingestion.pattern, ingestion.since)
    found: list[tuple[str, str, int, str]] = []
    for page in listing_pages(rt.store(location), location, flt):
        objects = [o for o in page.objects if o.skip_reason is None]
        with rt.db.connect() as conn:
            known = {
                r.file_path: r
                for r in conn.execute(
                    text(
                        "SELECT file_path, etag, status FROM files WHERE ingestion_id = :id AND file_path = ANY(:paths)"
                    ),
                    {"id": ingestion.id, "paths": [o.file_path for o in objects]},
                )
            }
        for o in objects:
            entry = known.get(o.file_path)
            if entry is None or entry.etag != o.etag:
                found.append((o.file_path, o.etag, o.size, "NEW"))
            elif entry.status in PENDING_STATUSES:
                found.append((o.file_path, o.etag, o.size, entry.status))
            if len(found) >= limit:
                return found
    return found


def validate(rt: Runtime, ingestion: Ingestion, *, limit: int = 100) -> dict[str, Any]:
    """``items``: one report per file a run would read (at most ``limit``, in key order);
    ``error_type``/``error_message``: why a run would fail before reading any (the source or the
    catalog unreachable), else None."""
    try:
        rows = pending_files(rt, ingestion, limit)
        with tables.iceberg_errors(ingestion.table_identifier):
            table = tables.load_table(rt.catalog, ingestion.table_identifier) if rows else None
    except LedgerUnavailableError:
        raise
    except IcefloeError as exc:
        return {"items": [], "error_type": type(exc).__name__, "error_message": str(exc)}
    return {"items": _reports(rt, ingestion, rows, table), "error_type": None, "error_message": None}


def _reports(
    rt: Runtime, ingestion: Ingestion, rows: list[tuple[str, str, int, str]], table: Table | None
) -> list[dict[str, Any]]:
    target = arrow_target(table) if table is not None else None
    options = ReadOptions.for_ingestion(ingestion, rt.settings)
    pool = isolation.shared_pool(rt.settings.parser_processes) if rt.settings.parser_processes > 0 else None
    policy = Policy.of(ingestion.on_bad_record, ingestion.max_bad_records)
    reports = []
    for path, etag, size, status in rows:
        report: dict[str, Any] = {"file_path": path, "status": status}
        try:
            schema, records, bad = _read(rt, pool, path, etag, size, options, target)
        except (FileError, IcefloeError) as exc:
            report |= {"records": None, "bad_records": None, "errors": [], "new_columns": {}}
            report |= {"verdict": "fails", "error_type": exc.error_type, "error_message": str(exc)}
            reports.append(report)
            continue
        change = (
            evolution.diff(target if target is not None else pa.schema([]), schema, normalise_type) if schema else None
        )
        report |= {
            "records": records,
            "bad_records": len(bad),
            "errors": [f"line {b.row_number}: {b.error}" for b in bad[:FIRST_ERRORS]],
            "new_columns": {f.name: evolution.iceberg_type_name(f.type) for f in change.added} if change else {},
            # the change a table that exists would need (a new table simply takes the file's schema)
            "schema_change": change.describe() if change and target is not None else None,
        }
        report |= _verdict(policy, path, records, bad)
        if change and target is not None and report["verdict"] != "fails":
            report |= _schema_verdict(ingestion.schema_evolution)
        reports.append(report)
    return reports


def _verdict(policy: Policy, path: str, records: int, bad: list[BadRecord]) -> dict[str, Any]:
    """What a run would make of the file under the ingestion's policy (the limit is the engine's
    own check, :meth:`Policy.check`, not a second copy of its rule)."""
    if not bad:
        return {"verdict": "ok"}
    if policy.on_bad_record == "fail-file":
        return {"verdict": "fails", "error_type": "bad records (--on-bad-record fail-file)"}
    try:
        policy.check(path, bad, records)
    except FileError as exc:
        return {"verdict": "fails", "error_type": exc.error_type, "error_message": str(exc)}
    return {"verdict": "quarantined" if policy.quarantines else "skipped"}


def _schema_verdict(schema_evolution: str) -> dict[str, Any]:
    """What a run would make of a file whose schema differs from the table's (README, "Schema evolution")."""
    if schema_evolution == "approve":
        return {"verdict": "held", "error_type": "SchemaChangePending"}
    if schema_evolution == "fail":
        return {"verdict": "fails", "error_type": "SchemaMismatch"}
    return {}  # add-columns: evolved in the rows' commit; rescue: misfits go to _rescued_data


def _read(
    rt: Runtime,
    pool: isolation.ParserPool | None,
    path: str,
    etag: str,
    size: int,
    options: ReadOptions,
    target: pa.Schema | None,
) -> tuple[pa.Schema | None, int, list[BadRecord]]:
    """(the file's schema, its good records, its bad records), salvaging it whatever the policy."""
    objects = rt.store(parse_source(path))
    if size <= SMALL_FILE_BYTES:
        data = objects.read(path, etag)
        for salvage in (False, True) if options.format != "parquet" else (False,):
            opts = replace(options, salvage=salvage, target=target if salvage else None)
            try:
                parsed = pool.parse(data, path, opts, SMALL_FILE_BYTES) if pool else _parse(data, path, opts)
                if parsed is None:
                    break  # expands beyond the small-file bound: stream it
                table, bad = parsed
                if target is not None and table.num_rows and set(table.schema.names) <= set(target.names):
                    try:
                        conform(table, target, source_file=path, ingested_at=_NOW, file_uri=path)
                    except ValueChangedError as exc:
                        if not exc.retry_as_text:
                            raise  # (a run reads such a column again as text: that fits)
                return (table.schema if table.num_rows else None), table.num_rows, bad
            except FileError as exc:
                if salvage or not record_level(exc):
                    raise
    opts = replace(options, salvage=True, target=target) if options.format != "parquet" else options
    body = objects.open(path, etag)
    try:
        batches = pool.stream(body, path, opts) if pool else stream_batches(body, path, opts)
        schema: pa.Schema | None = None
        records, bad = 0, []
        for batch, rejected in batches:
            bad.extend(rejected)
            records += batch.num_rows
            if schema is None and batch.num_rows:
                schema = batch.schema
        return schema, records, bad
    finally:
        body.release_conn()


def _parse(data: bytes, path: str, options: ReadOptions) -> tuple[pa.Table, list[BadRecord]] | None:
    text_ = expanded(data, path, options.format, SMALL_FILE_BYTES)
    return None if text_ is None else parse_text(text_, path, options, parse_whole)


_NOW = pa.scalar(0, pa.timestamp("us", tz="UTC"))  # conform's _ingested_at; nothing is written
