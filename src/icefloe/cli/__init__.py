"""The `icefloe` command line (Typer). Commands hold no logic: they call the domain functions.

Every command imports this package and all the command modules, so those import the domain modules
that bring pyarrow, pyiceberg or boto3 (~0.5 s) inside the commands that use them ("on use"): a
command that only reads the ledger never loads them (tests/unit/test_cli_startup.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer

from icefloe import alerts, ingestions, ledger, logs, runs
from icefloe.cli.output import Output as Output
from icefloe.cli.output import show_flags_as_flags
from icefloe.errors import ConfigurationError, IcefloeError
from icefloe.runtime import Runtime
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
from icefloe.cli import api_commands, file_commands, ingestion_commands, maintain, operations, validate_command  # noqa: E402, F401  (api_commands: serve, token)
from icefloe.cli import cleanup_command as cleanup_command  # noqa: E402  (cleanup)
from icefloe.cli import schema_commands as schema_commands  # noqa: E402  (schema pending|approve|reject|history)
from icefloe.cli import services_commands as services_commands  # noqa: E402  (services, catalog)
from icefloe.cli import table_commands as table_commands  # noqa: E402  (sql, table)

# `icefloe spark-server`: the local Spark Connect server (imports no pyspark).
from icefloe.engines.spark.cli import spark_app  # noqa: E402

app.add_typer(spark_app, name="spark-server")
