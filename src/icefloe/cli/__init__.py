"""The `icefloe` command line (Typer). Commands hold no logic: they call the domain functions."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer

from icefloe import alerts, engines, ingestions, ledger, logs, runs, tables
from icefloe.cli.output import Output as Output
from icefloe.cli.output import show_flags_as_flags
from icefloe.discovery import Filter, listing_pages
from icefloe.durations import parse_duration
from icefloe.errors import ConfigurationError, IcefloeError, SourceError
from icefloe.ingestions import IngestionSpec
from icefloe.redaction import redact_text
from icefloe.runtime import Runtime
from icefloe.s3 import S3Location
from icefloe.schema import load_schema_file
from icefloe.settings import Settings

show_flags_as_flags()
app = typer.Typer(no_args_is_help=True, add_completion=False, help="Incremental, exactly-once S3 → Iceberg ingestion.")
db_app = typer.Typer(no_args_is_help=True, help="The ledger database.")
ingestion_app = typer.Typer(no_args_is_help=True, help="Define and manage ingestions.")
app.add_typer(db_app, name="db")
app.add_typer(ingestion_app, name="ingestion")
alerts_app = typer.Typer(no_args_is_help=True, help="Alerts: test the channels, list what was detected and sent.")
app.add_typer(alerts_app, name="alerts")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
T = TypeVar("T")

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def current_settings(ctx: typer.Context) -> Settings:
    """The settings :func:`main` built for this invocation (``app(obj=settings)``); read here when
    ``app`` is called without it (e.g. by typer's test runner)."""
    settings = ctx.find_object(Settings)
    return settings if settings is not None else Settings.from_env(os.environ)


@contextmanager
def _runtime(ctx: typer.Context) -> Iterator[Runtime]:
    """The ledger (embedded PostgreSQL started and migrations applied if needed), for the commands
    that use it; the others never start a database."""
    rt = Runtime.open(current_settings(ctx))
    try:
        yield rt
    finally:
        rt.close()


def _guard(out: Output, fn: Callable[[], T]) -> T:
    """Run a command body; errors become one line on stderr and the contract's exit codes."""
    try:
        return fn()
    except ConfigurationError as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except IcefloeError as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_RUN_FAILED) from None
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        out.error("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug or an untranslated library error: still one line
        logging.getLogger("icefloe").debug("unexpected error", exc_info=True)
        out.error(f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
        raise typer.Exit(EXIT_RUN_FAILED) from None


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress (INFO) to stderr.")] = False,
) -> None:
    if verbose:
        logging.getLogger().setLevel(logging.INFO)


# ----------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Apply pending migrations to the ledger database."""
    out = Output(as_json)

    def body() -> None:
        Runtime.open(current_settings(ctx), migrate=True).close()
        if as_json:
            out.json({"ledger": "up to date"})
        out.message("ledger schema is up to date")

    _guard(out, body)


# ----------------------------------------------------------------------------- ingestion


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
    source: Annotated[str, typer.Option(help="s3://bucket/prefix/")],
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
    as_json: JsonOpt = False,
) -> None:
    """Define an ingestion (and list its source once: a missing bucket or no matching object is said)."""
    out = Output(as_json)

    def body() -> None:
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
    location = S3Location.parse(ingestion.source)
    try:
        page = next(listing_pages(rt.s3, location, Filter(location.prefix, ingestion.pattern, ingestion.since)), None)
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
            location = S3Location.parse(i.source)
            with rt.db.connect() as conn:
                counts = ledger.status_counts(conn, i.id)
                state = ledger.listing_state(conn, i.id, location.uri(location.prefix), i.full_listing_every_seconds)
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
        with _runtime(ctx) as rt:
            i = ingestions.get(rt.db, name)
            location = S3Location.parse(i.source)
            first = next(listing_pages(rt.s3, location, Filter(location.prefix, i.pattern, i.since)), None)
            page = first.objects if first is not None else []
            table = tables.load_table(rt.catalog, i.table_identifier)
        out.record(
            {
                "source": "ok",
                "objects_on_first_page": len(page),
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


# ----------------------------------------------------------------------------- run, files, retry


@app.command("run")
def run_command(
    ctx: typer.Context,
    name: str,
    as_json: JsonOpt = False,
    enqueue: Annotated[bool, typer.Option("--enqueue", help="queue the run for `icefloe worker` and return")] = False,
    full_listing: Annotated[
        bool, typer.Option("--full-listing", help="list the whole source (reconciles an incremental listing)")
    ] = False,
) -> None:
    """Run an ingestion once: discover, process, commit. Exit 0 ok, 3 some files failed, 1 run failed."""
    out = Output(as_json)

    def body() -> int:
        with _runtime(ctx) as rt:
            i = ingestions.get(rt.db, name)
            if i.status == "PAUSED":
                raise ConfigurationError(f"ingestion {name} is paused (icefloe ingestion resume {name})")
            if enqueue:
                queued = runs.enqueue(rt.db, i, trigger="cli", full_listing=full_listing)
                data = runs.summary(queued, i.name) | {"trigger": queued.trigger, "created_at": queued.created_at}
                if as_json:
                    out.json(data)
                else:
                    out.record(data, title=f"queued run {queued.id} of {i.name}")
                return EXIT_OK
            from icefloe import worker  # the engine stack imports in seconds: only commands that run it
            from icefloe.cli import progress

            with progress.run_progress(out) as callback:
                run = worker.run_ingestion(rt, i, trigger="cli", progress=callback, full_listing=full_listing)
            # Failed files of earlier runs in their backoff: exit 0 with those outstanding is no surprise.
            summary = runs.summary(run, i.name) | progress.waiting_retries(rt.db, i)
            from icefloe import advice

            summary["warnings"] = advice.run_warnings(rt, i, run)
        if as_json:
            out.json(summary)
        else:
            out.record(summary, title=f"run {run.id} of {i.name}: {run.status}")
            if run.files_failed:
                out.message(
                    f"{run.files_failed} file(s) failed: icefloe files {i.name} --status FAILED", style="yellow"
                )
            progress.say_waiting(out, i, summary)
        for warning in summary["warnings"]:
            out.warning(warning)
        return {"SUCCESS": EXIT_OK, "PARTIAL": EXIT_PARTIAL}.get(run.status, EXIT_RUN_FAILED)

    raise typer.Exit(_guard(out, body))


@app.command("retry")
def retry_command(
    ctx: typer.Context,
    name: str,
    path: Annotated[str | None, typer.Option(help="only this file (key below the prefix, or s3:// URI)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make FAILED files eligible again now (the next run or worker picks them up)."""
    out = Output(as_json)

    def body() -> None:
        with _runtime(ctx) as rt:
            i = ingestions.get(rt.db, name)
            with rt.db.begin() as conn:
                uri = None if path is None else str(operations.find_file(conn, i, path)["file_path"])
                n = ledger.make_retryable(conn, i.id, uri)
        if as_json:
            out.json({"ingestion": i.name, "file_path": uri, "retried": n})
        elif uri is not None and n == 0:
            out.message(f"{uri} is not FAILED: nothing to retry")
        else:
            out.message(f"{n} file(s) will be retried (icefloe run {i.name})")

    _guard(out, body)


# ----------------------------------------------------------------------------- alerts


@alerts_app.command("test")
def alerts_test(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Send one test alert through every configured channel. Exit 1 if any channel failed."""
    out = Output(as_json)

    def body() -> int:
        results = alerts.send_test_alert(current_settings(ctx).alerts)
        if as_json:
            out.json({name: {"ok": error is None, "error": error} for name, error in results.items()})
        else:
            line = "; ".join(
                f"{name}: ok" if error is None else f"{name}: error: {error}" for name, error in results.items()
            )
            out.console.print(line, markup=False, soft_wrap=True)
        return EXIT_OK if all(error is None for error in results.values()) else EXIT_RUN_FAILED

    raise typer.Exit(_guard(out, body))


@alerts_app.command("list")
def alerts_list(
    ctx: typer.Context,
    unsent: Annotated[bool, typer.Option("--unsent", help="only alerts not sent yet")] = False,
    limit: Annotated[int, typer.Option()] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Recent alerts, newest first: what was detected, when it was sent, or why not yet."""
    out = Output(as_json)

    def body() -> None:
        with _runtime(ctx) as rt:
            rows = alerts.list_recent(rt.db, limit=limit, unsent_only=unsent)
        out.table(
            rows,
            ["id", "kind", "ingestion", "subject", "created_at", "sent_at", "attempts", "last_error"],
            title="alerts",
        )

    _guard(out, body)


@app.command("demo")
def demo_command(ctx: typer.Context) -> None:
    """The whole flow on embedded services with sample data."""
    from icefloe import demo

    out = Output(False)
    _guard(out, lambda: demo.run(out, current_settings(ctx)))


def main() -> None:
    """The entry point: settings are read and validated here, once, and passed to the commands."""
    try:
        settings = Settings.from_env(os.environ)
    except ConfigurationError as exc:
        Output(False).error(str(exc))
        raise SystemExit(EXIT_USAGE) from None
    logs.configure(fmt=settings.log_format)
    app(obj=settings)


# Commands defined in their own modules register themselves on `app` when imported.
from icefloe.cli import api_commands, file_commands, maintain, operations  # noqa: E402, F401  (api_commands: serve, token)
from icefloe.cli import schema_commands as schema_commands  # noqa: E402  (schema pending|approve|reject|history)
from icefloe.cli import services_commands as services_commands  # noqa: E402  (services, catalog)
from icefloe.cli import table_commands as table_commands  # noqa: E402  (sql, table)

# `icefloe spark-server`: the local Spark Connect server (imports no pyspark).
from icefloe.engines.spark.cli import spark_app  # noqa: E402

app.add_typer(spark_app, name="spark-server")
