"""The `icefloe` command line (Typer). Commands hold no logic: they call the domain functions."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from icefloe import alerts, engines, ingestions, ledger, logs, migrations, runs, tables
from icefloe.cli.output import Output as Output
from icefloe.discovery import Filter, listing_pages
from icefloe.durations import parse_duration
from icefloe.errors import ConfigurationError, IcefloeError
from icefloe.ingestions import IngestionSpec
from icefloe.runtime import Runtime
from icefloe.s3 import S3Location
from icefloe.schema import load_schema_file
from icefloe.settings import Settings

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


@contextmanager
def _runtime() -> Iterator[Runtime]:
    rt = Runtime(Settings.from_env())
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
def db_upgrade() -> None:
    """Apply pending migrations to the ledger database."""
    out = Output(False)

    def body() -> None:
        with _runtime() as rt:
            migrations.upgrade(rt.database_url)
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
    name: str,
    source: Annotated[str, typer.Option(help="s3://bucket/prefix/")],
    format: Annotated[str, typer.Option(help="csv | jsonl | parquet")],
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
    alert_stale_after: Annotated[
        str | None, typer.Option(help="alert when no run has succeeded for this long: 90m, 2h, 1d")
    ] = None,
    schedule: Annotated[str | None, typer.Option(help='run on a cron schedule, e.g. "*/5 * * * *"')] = None,
    every: Annotated[str | None, typer.Option(help="run at an interval, e.g. 10m, 1h")] = None,
    timezone: Annotated[str, typer.Option(help="time zone of --schedule")] = "UTC",
    allow_concurrent_runs: Annotated[bool, typer.Option("--allow-concurrent-runs")] = False,
    engine: Annotated[
        str, typer.Option(help="arrow (in-process) | spark (Spark Connect; needs the spark extra)")
    ] = "arrow",
    spark_remote: Annotated[
        str | None, typer.Option(help="sc://host:15002 for --engine spark (default: $ICEFLOE_SPARK_REMOTE)")
    ] = None,
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
    as_json: JsonOpt = False,
) -> None:
    """Define an ingestion."""
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
            **operations.schedule_options(schedule, every),
            schedule_timezone=timezone,
            allow_concurrent_runs=allow_concurrent_runs,
            alert_stale_after_seconds=parse_duration(alert_stale_after) if alert_stale_after else None,
            engine=engine,
            spark_remote=spark_remote,
            listing=listing,
            relist_lookback_seconds=parse_duration(relist_lookback) if relist_lookback else None,
            full_listing_every_seconds=parse_duration(full_listing_every),
        )
        spec.validate()
        engines.require(spec.engine)  # one line naming icefloe[spark] when the client is missing
        with _runtime() as rt:
            created = ingestions.create(rt.db, spec)
        out.record(ingestions.as_dict(created), title=f"created ingestion {created.name}")

    _guard(out, body)


@ingestion_app.command("list")
def ingestion_list(as_json: JsonOpt = False) -> None:
    """List ingestions."""
    out = Output(as_json)

    def body() -> None:
        with _runtime() as rt:
            rows = [ingestions.as_dict(i) for i in ingestions.list_all(rt.db)]
        out.table(rows, ["name", "status", "source", "format", "table", "pattern"], title="ingestions")

    _guard(out, body)


@ingestion_app.command("show")
def ingestion_show(name: str, as_json: JsonOpt = False) -> None:
    """Show an ingestion, its ledger counts and its last run."""
    out = Output(as_json)

    def body() -> None:
        with _runtime() as rt:
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
def ingestion_check(name: str, as_json: JsonOpt = False) -> None:
    """Test access to the source (one listing page) and to the catalog."""
    out = Output(as_json)

    def body() -> None:
        with _runtime() as rt:
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


def _set_status(name: str, status: str) -> None:
    out = Output(False)

    def body() -> None:
        with _runtime() as rt:
            ingestions.set_status(rt.db, name, status)
        out.message(f"{name}: {status}")

    _guard(out, body)


@ingestion_app.command("pause")
def ingestion_pause(name: str) -> None:
    """Pause an ingestion: `run` refuses it until resumed."""
    _set_status(name, "PAUSED")


@ingestion_app.command("resume")
def ingestion_resume(name: str) -> None:
    """Resume a paused ingestion."""
    _set_status(name, "ACTIVE")


@ingestion_app.command("delete")
def ingestion_delete(name: str, yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    """Delete an ingestion and its ledger (the Iceberg table is kept)."""
    out = Output(False)
    if not yes and sys.stdin.isatty() and not typer.confirm(f"delete ingestion {name} and its ledger?"):
        raise typer.Exit(EXIT_USAGE)

    def body() -> None:
        with _runtime() as rt:
            ingestions.delete(rt.db, name)
        out.message(f"deleted {name}")

    _guard(out, body)


# ----------------------------------------------------------------------------- run, files, retry


@app.command("run")
def run_command(
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
        with _runtime() as rt:
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

            show_bar = not as_json and out.console.is_terminal
            if show_bar:
                with Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[records]} records"),
                    TimeElapsedColumn(),
                    console=out.console,
                    transient=True,
                ) as bar:
                    task = bar.add_task("discovering", total=None, records=0)

                    def progress(p: Any) -> None:
                        if p.phase == "discovering":
                            bar.update(task, description=f"discovering ({p.discovered} listed)")
                        else:
                            bar.update(
                                task,
                                description="processing",
                                total=p.claimable,
                                completed=p.succeeded + p.failed,
                                records=p.records,
                            )

                    run = worker.run_ingestion(rt, i, trigger="cli", progress=progress, full_listing=full_listing)
            else:
                run = worker.run_ingestion(rt, i, trigger="cli", full_listing=full_listing)
            summary = runs.summary(run, i.name)
        if as_json:
            out.json(summary)
        else:
            out.record(summary, title=f"run {run.id} of {i.name}: {run.status}")
            if run.files_failed:
                out.message(
                    f"[yellow]{run.files_failed} file(s) failed:[/yellow] icefloe files {i.name} --status FAILED"
                )
        return {"SUCCESS": EXIT_OK, "PARTIAL": EXIT_PARTIAL}.get(run.status, EXIT_RUN_FAILED)

    raise typer.Exit(_guard(out, body))


@app.command("files")
def files_command(
    name: str,
    status: Annotated[str | None, typer.Option(help="DISCOVERED|PROCESSING|SUCCESS|FAILED|SKIPPED")] = None,
    limit: Annotated[int, typer.Option()] = 1000,
    history: Annotated[str | None, typer.Option(help="every attempt at this file (key or s3:// URI)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The ledger of one ingestion."""
    out = Output(as_json)

    def body() -> None:
        if history is not None:
            operations.history_command(out, name, history)
            return
        with _runtime() as rt:
            i = ingestions.get(rt.db, name)
            with rt.db.connect() as conn:
                rows = ledger.list_files(conn, i.id, status=status.upper() if status else None, limit=limit)
        out.table(
            rows,
            ["file_path", "status", "records_ingested", "retry_count", "error_type", "error_message"],
            title=f"files of {name}",
        )

    _guard(out, body)


@app.command("retry")
def retry_command(
    name: str, path: Annotated[str | None, typer.Option(help="only this file (key or s3:// URI)")] = None
) -> None:
    """Make FAILED files eligible again now (the next run or worker picks them up)."""
    out = Output(False)

    def body() -> None:
        with _runtime() as rt:
            i = ingestions.get(rt.db, name)
            uri = path
            if path is not None and not path.startswith("s3://"):
                uri = S3Location.parse(i.source).uri(path)
            with rt.db.begin() as conn:
                n = ledger.make_retryable(conn, i.id, uri)
        out.message(f"{n} file(s) will be retried")

    _guard(out, body)


# ----------------------------------------------------------------------------- alerts


@alerts_app.command("test")
def alerts_test(as_json: JsonOpt = False) -> None:
    """Send one test alert through every configured channel. Exit 1 if any channel failed."""
    out = Output(as_json)

    def body() -> int:
        results = alerts.send_test_alert(alerts.AlertSettings.from_env())
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
    unsent: Annotated[bool, typer.Option("--unsent", help="only alerts not sent yet")] = False,
    limit: Annotated[int, typer.Option()] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Recent alerts, newest first: what was detected, when it was sent, or why not yet."""
    out = Output(as_json)

    def body() -> None:
        with _runtime() as rt:
            rows = alerts.list_recent(rt.db, limit=limit, unsent_only=unsent)
        out.table(
            rows,
            ["id", "kind", "ingestion", "subject", "created_at", "sent_at", "attempts", "last_error"],
            title="alerts",
        )

    _guard(out, body)


@app.command("demo")
def demo_command() -> None:
    """The whole flow on embedded services with sample data."""
    from icefloe import demo

    out = Output(False)
    _guard(out, lambda: demo.run(out))


def main() -> None:
    logs.configure()
    app()


# Commands defined in their own modules register themselves on `app` when imported.
from icefloe.cli import api_commands, operations  # noqa: E402, F401  (api_commands: serve, token)

# `icefloe spark-server`: the local Spark Connect server (imports no pyspark).
from icefloe.engines.spark.cli import spark_app  # noqa: E402

app.add_typer(spark_app, name="spark-server")
