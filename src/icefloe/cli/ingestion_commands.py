"""`icefloe ingestion create|list|show|check|pause|resume|delete` (`update` is in
:mod:`icefloe.cli.operations`). Registered on the main app by importing this module."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Annotated, Any

import typer

from icefloe import engines, ingestions, ledger, runs
from icefloe.cli import EXIT_USAGE, JsonOpt, Output, _guard, _runtime, ingestion_app, operations
from icefloe.discovery import Filter, listing_pages
from icefloe.durations import parse_delay, parse_duration
from icefloe.errors import ConfigurationError, SourceError
from icefloe.ingestions import IngestionSpec
from icefloe.redaction import redact_text
from icefloe.runtime import Runtime
from icefloe.stores import parse_source


def _parse_since(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"--since must be ISO-8601, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@ingestion_app.command("create")
def ingestion_create(
    ctx: typer.Context,
    name: str,
    source: Annotated[str, typer.Option(help="s3://bucket/prefix/, gs://…, az://container/…, file:///path/")],
    format: Annotated[str, typer.Option(help="csv | jsonl | json (an array of objects) | parquet")],
    table: Annotated[str, typer.Option(help="namespace.table")],
    pattern: Annotated[str | None, typer.Option(help="glob below the prefix: * ** ? [..] {a,b}")] = None,
    since: Annotated[str | None, typer.Option(help="only objects modified at/after (ISO-8601)")] = None,
    schema: Annotated[str | None, typer.Option(help="JSON schema file (Iceberg or {col: type})")] = None,
    on_change: Annotated[str, typer.Option(help="replace | append: what a changed file does")] = "replace",
    max_files_per_commit: Annotated[int, typer.Option()] = 1000,
    max_bytes_per_commit: Annotated[int, typer.Option()] = 1 << 30,
    max_retries: Annotated[int, typer.Option()] = 3,
    csv_delimiter: Annotated[str, typer.Option()] = ",",
    csv_quote_char: Annotated[str, typer.Option()] = '"',
    csv_no_header: Annotated[bool, typer.Option("--csv-no-header")] = False,
    csv_null_values: Annotated[
        str | None,
        typer.Option(help="comma-separated field texts read as NULL, e.g. ',NA,NULL' (default: only empty)"),
    ] = None,
    alert_stale_after: Annotated[
        str | None, typer.Option(help="alert when no run has succeeded for this long: 90m, 2h, 1d")
    ] = None,
    schedule: Annotated[str | None, typer.Option(help='run on a cron schedule, e.g. "*/5 * * * *"')] = None,
    every: Annotated[str | None, typer.Option(help="run at an interval, e.g. 10m, 1h")] = None,
    timezone: Annotated[str, typer.Option(help="time zone of --schedule")] = "UTC",
    allow_concurrent_runs: Annotated[bool, typer.Option("--allow-concurrent-runs")] = False,
    maintain_every: Annotated[
        str | None, typer.Option(help="a worker compacts and expires the table this often, e.g. 1h, 1d")
    ] = None,
    engine: Annotated[
        str, typer.Option(help="arrow (in-process) | spark (Spark Connect; needs the spark extra)")
    ] = "arrow",
    spark_remote: Annotated[
        str | None, typer.Option(help="sc://host:15002 for --engine spark (default: $ICEFLOE_SPARK_REMOTE)")
    ] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="do not list the source once to check it")] = False,
    listing: Annotated[
        str, typer.Option(help="full (list the whole prefix every run) | incremental (after the watermark)")
    ] = "full",
    relist_lookback: Annotated[
        str | None,
        typer.Option(help="incremental: re-list date partitions this far before the watermark's, e.g. 2d"),
    ] = None,
    full_listing_every: Annotated[
        str, typer.Option(help="incremental: a full reconciling listing this often, e.g. 1d, 12h")
    ] = "1d",
    schema_evolution: Annotated[
        str, typer.Option(help="add-columns | approve | rescue | fail: a file whose schema differs")
    ] = "add-columns",
    timestamp_format: Annotated[
        list[str] | None, typer.Option(help="strptime-style timestamp format of CSV/JSON text (repeatable)")
    ] = None,
    date_format: Annotated[
        list[str] | None, typer.Option(help="strptime-style date format of CSV/JSON text, e.g. %d/%m/%Y (repeatable)")
    ] = None,
    on_bad_record: Annotated[
        str, typer.Option(help="fail-file | skip | quarantine (to <table>__quarantine): a line or row that is bad")
    ] = "fail-file",
    max_bad_records: Annotated[
        str | None, typer.Option(help="with skip/quarantine: fail a file with more bad records than N or P%")
    ] = None,
    discovery: Annotated[
        str, typer.Option(help="listing (list the source) | events (S3 notifications from --events-queue)")
    ] = "listing",
    events_queue: Annotated[str | None, typer.Option(help="events: the SQS queue URL of the notifications")] = None,
    reconcile_every: Annotated[
        str, typer.Option(help="events: a reconciling full listing this often, e.g. 1d, 6h")
    ] = "1d",
    after_ingest: Annotated[
        str, typer.Option(help="keep | delete | move:PREFIX | tag:KEY=VALUE: the source file once ingested")
    ] = "keep",
    after_ingest_delay: Annotated[
        str, typer.Option(help="clean up files ingested longer ago than this, e.g. 7d, 0s")
    ] = "7d",
    as_json: JsonOpt = False,
) -> None:
    """Define an ingestion (and list its source once: a missing bucket or no matching object is said)."""
    out = Output(as_json)

    def body() -> None:
        from icefloe.schema_documents import load_schema_file  # on use: see icefloe.cli

        spec = IngestionSpec(
            name=name,
            source=source,
            format=format,
            table=table,
            pattern=pattern,
            since=_parse_since(since),
            schema=load_schema_file(schema) if schema else None,
            on_change=on_change,
            max_files_per_commit=max_files_per_commit,
            max_bytes_per_commit=max_bytes_per_commit,
            max_retries=max_retries,
            csv_delimiter=csv_delimiter,
            csv_quote_char=csv_quote_char,
            csv_header=not csv_no_header,
            csv_null_values=csv_null_values.split(",") if csv_null_values is not None else None,
            **operations.schedule_options(schedule, every),
            schedule_timezone=timezone,
            allow_concurrent_runs=allow_concurrent_runs,
            maintain_every_seconds=parse_duration(maintain_every) if maintain_every else None,
            alert_stale_after_seconds=parse_duration(alert_stale_after) if alert_stale_after else None,
            engine=engine,
            spark_remote=spark_remote,
            listing=listing,
            relist_lookback_seconds=parse_duration(relist_lookback) if relist_lookback else None,
            full_listing_every_seconds=parse_duration(full_listing_every),
            schema_evolution=schema_evolution,
            timestamp_formats=timestamp_format or None,
            date_formats=date_format or None,
            on_bad_record=on_bad_record,
            max_bad_records=max_bad_records,
            discovery=discovery,
            events_queue=events_queue,
            reconcile_every_seconds=parse_duration(reconcile_every),
            after_ingest=after_ingest,
            after_ingest_delay_seconds=parse_delay(after_ingest_delay),
        )
        spec.validate()
        engines.require(spec.engine)  # one line naming icefloe[spark] when the client is missing
        with _runtime(ctx) as rt:
            created = ingestions.create(rt.db, spec)
            warnings = [] if no_check else _source_warnings(rt, created)
        data = ingestions.as_dict(created) | ({"warnings": warnings} if warnings else {})
        out.record(data, title=f"created ingestion {created.name}")
        for warning in warnings:
            out.warning(warning)

    _guard(out, body)


def _source_warnings(rt: Runtime, ingestion: Any) -> list[str]:
    """What one listing page of a new ingestion's source says is likely wrong (nothing: [])."""
    location = parse_source(ingestion.source)
    try:
        page = next(
            listing_pages(rt.store(location), location, Filter(location.prefix, ingestion.pattern, ingestion.since)),
            None,
        )
    except (SourceError, ConfigurationError) as exc:  # unreachable, or no credentials here: a warning
        return [redact_text(f"{exc}; created anyway (icefloe ingestion check {ingestion.name} tests it again)")]
    if page is None or not page.objects:
        what = f"matches --pattern {ingestion.pattern}" if ingestion.pattern else "is there"
        return [redact_text(f"no object under {ingestion.source} {what} yet (first listing page)")]
    return []


@ingestion_app.command("list")
def ingestion_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List ingestions."""
    out = Output(as_json)

    def body() -> None:
        with _runtime(ctx) as rt:
            rows = [ingestions.as_dict(i) for i in ingestions.list_all(rt.db)]
        out.table(rows, ["name", "status", "source", "format", "table", "pattern"], title="ingestions")

    _guard(out, body)


@ingestion_app.command("show")
def ingestion_show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Show an ingestion, its ledger counts and its last run."""
    out = Output(as_json)

    def body() -> None:
        with _runtime(ctx) as rt:
            i = ingestions.get(rt.db, name)
            location = parse_source(i.source)
            with rt.db.connect() as conn:
                counts = ledger.status_counts(conn, i.id)
                state = ledger.listing_state(conn, i.id, location.root, i.full_listing_every_seconds)
            last = runs.list_for(rt.db, i.id, limit=1)
        data = ingestions.as_dict(i) | {
            "files": counts,
            "listing_watermark": state.watermark,
            "last_full_listing_at": state.last_full_listing_at,
        }
        if last:
            data["last_run"] = runs.summary(last[0], i.name)
        out.record(data, title=f"ingestion {i.name}")

    _guard(out, body)


@ingestion_app.command("check")
def ingestion_check(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Test access to the source (one listing page) and to the catalog."""
    out = Output(as_json)

    def body() -> None:
        from icefloe import tables  # on use: see icefloe.cli

        with _runtime(ctx) as rt:
            i = ingestions.get(rt.db, name)
            location = parse_source(i.source)
            first = next(listing_pages(rt.store(location), location, Filter(location.prefix, i.pattern, i.since)), None)
            page = first.objects if first is not None else []
            table = tables.load_table(rt.catalog, i.table_identifier)
            queue = {}
            if i.discovery == "events" and i.events_queue:
                from icefloe import events

                queue = {"events_queue": "ok", "messages_waiting": events.check_queue(rt.settings.s3, i.events_queue)}
        out.record(
            {
                "source": "ok",
                "objects_on_first_page": len(page),
                **queue,
                "catalog": "ok",
                "table": tables.describe(table) if table is not None else "not created yet (first run creates it)",
            },
            title=f"check {i.name}",
        )

    _guard(out, body)


def _set_status(ctx: typer.Context, name: str, status: str, as_json: bool) -> None:
    out = Output(as_json)

    def body() -> None:
        with _runtime(ctx) as rt:
            ingestions.set_status(rt.db, name, status)
        if as_json:
            out.json({"name": name, "status": status})
        out.message(f"{name}: {status}")

    _guard(out, body)


@ingestion_app.command("pause")
def ingestion_pause(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Pause an ingestion: `run` refuses it until resumed."""
    _set_status(ctx, name, "PAUSED", as_json)


@ingestion_app.command("resume")
def ingestion_resume(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Resume a paused ingestion."""
    _set_status(ctx, name, "ACTIVE", as_json)


@ingestion_app.command("delete")
def ingestion_delete(
    ctx: typer.Context,
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete an ingestion and its ledger (the Iceberg table is kept)."""
    out = Output(as_json)
    if not yes:
        if not sys.stdin.isatty():  # a script: deleting a ledger is never implied
            out.error(f"not deleting ingestion {name} without --yes (no terminal to confirm on)")
            raise typer.Exit(EXIT_USAGE)
        if not typer.confirm(f"delete ingestion {name} and its ledger?"):
            raise typer.Exit(EXIT_USAGE)

    def body() -> None:
        with _runtime(ctx) as rt:
            ingestions.delete(rt.db, name)
        if as_json:
            out.json({"deleted": name})
        out.message(f"deleted {name}")

    _guard(out, body)
