"""CLI commands for running icefloe unattended: `worker`, `runs`, `ingestion update`, `files --history`.

Registered on the main app by importing this module (see the end of ``icefloe.cli``).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer

from icefloe import ingestions, ledger, runs
from icefloe.cli import EXIT_OK, JsonOpt, Output, _guard, _runtime, app, current_settings, ingestion_app
from icefloe.durations import parse_duration
from icefloe.errors import ConfigurationError, NotFoundError
from icefloe.models import Ingestion
from icefloe.settings import AlertSettings


def schedule_options(schedule: str | None, every: str | None) -> dict[str, Any]:
    """`--schedule CRON` / `--every DURATION` as ingestion fields (at most one of them)."""
    if schedule is not None and every is not None:
        raise ConfigurationError("give --schedule (cron) or --every (interval), not both")
    return {
        "schedule_cron": schedule,
        "schedule_interval_seconds": parse_duration(every) if every is not None else None,
    }


@ingestion_app.command("update")
def ingestion_update(
    ctx: typer.Context,
    name: str,
    schedule: Annotated[str | None, typer.Option(help='cron expression, e.g. "*/5 * * * *"')] = None,
    every: Annotated[str | None, typer.Option(help="interval, e.g. 10m, 1h")] = None,
    no_schedule: Annotated[bool, typer.Option("--no-schedule", help="remove the schedule")] = False,
    timezone: Annotated[str | None, typer.Option(help="time zone of the cron schedule, e.g. Europe/Paris")] = None,
    allow_concurrent_runs: Annotated[bool | None, typer.Option("--allow-concurrent-runs/--no-concurrent-runs")] = None,
    pattern: Annotated[str | None, typer.Option()] = None,
    max_retries: Annotated[int | None, typer.Option()] = None,
    max_files_per_commit: Annotated[int | None, typer.Option()] = None,
    max_bytes_per_commit: Annotated[int | None, typer.Option()] = None,
    on_change: Annotated[str | None, typer.Option()] = None,
    engine: Annotated[str | None, typer.Option(help="arrow | spark")] = None,
    spark_remote: Annotated[str | None, typer.Option(help="Spark Connect URL, e.g. sc://host:15002")] = None,
    alert_stale_after: Annotated[str | None, typer.Option(help="e.g. 2h; alert when no run succeeded")] = None,
    maintain_every: Annotated[str | None, typer.Option(help="e.g. 1d; a worker maintains the table")] = None,
    listing: Annotated[str | None, typer.Option(help="full | incremental")] = None,
    relist_lookback: Annotated[str | None, typer.Option(help="e.g. 2d; partition lookback")] = None,
    no_relist_lookback: Annotated[bool, typer.Option("--no-relist-lookback", help="remove the lookback")] = False,
    full_listing_every: Annotated[str | None, typer.Option(help="e.g. 1d; full reconciling listing interval")] = None,
    schema_evolution: Annotated[str | None, typer.Option(help="add-columns | approve | rescue | fail")] = None,
    timestamp_format: Annotated[list[str] | None, typer.Option(help="strptime-style (repeatable)")] = None,
    date_format: Annotated[list[str] | None, typer.Option(help="strptime-style (repeatable)")] = None,
    csv_null_values: Annotated[str | None, typer.Option(help='CSV texts read as NULL, e.g. "n/a,NULL"')] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change an ingestion's schedule or options."""
    out = Output(as_json)

    def body() -> None:
        changes: dict[str, Any] = {}
        if no_schedule:
            changes.update(schedule_cron=None, schedule_interval_seconds=None)
        elif schedule is not None or every is not None:
            changes.update(schedule_options(schedule, every))
        optional = {
            "schedule_timezone": timezone,
            "allow_concurrent_runs": allow_concurrent_runs,
            "pattern": pattern,
            "max_retries": max_retries,
            "max_files_per_commit": max_files_per_commit,
            "max_bytes_per_commit": max_bytes_per_commit,
            "on_change": on_change,
            "engine": engine,
            "spark_remote": spark_remote,
            "alert_stale_after_seconds": parse_duration(alert_stale_after) if alert_stale_after else None,
            "maintain_every_seconds": parse_duration(maintain_every) if maintain_every else None,
            "listing": listing,
            "relist_lookback_seconds": parse_duration(relist_lookback) if relist_lookback else None,
            "full_listing_every_seconds": parse_duration(full_listing_every) if full_listing_every else None,
            "schema_evolution": schema_evolution,
            "timestamp_formats": timestamp_format or None,
            "date_formats": date_format or None,
            "csv_null_values": csv_null_values.split(",") if csv_null_values is not None else None,
        }
        changes.update({k: v for k, v in optional.items() if v is not None})
        if no_relist_lookback:
            changes["relist_lookback_seconds"] = None
        if not changes:
            raise ConfigurationError("nothing to change: give at least one option")
        with _runtime(ctx) as rt:
            updated = ingestions.update(rt.db, name, changes)
        out.record(ingestions.as_dict(updated), title=f"updated ingestion {updated.name}")

    _guard(out, body)


@app.command("runs")
def runs_command(
    ctx: typer.Context,
    name: str,
    limit: Annotated[int, typer.Option()] = 20,
    watch: Annotated[bool, typer.Option("--watch", help="follow the latest run (or --run) until it ends")] = False,
    run_id: Annotated[int | None, typer.Option("--run", help="the run to --watch")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recent runs of an ingestion with their status and counters, newest first."""
    out = Output(as_json)

    def body() -> None:
        with _runtime(ctx) as rt:
            i = ingestions.get(rt.db, name)
            if watch or run_id is not None:
                from icefloe.cli import progress

                progress.watch(out, rt.db, i, run_id)
                return
            rows = [
                runs.summary(r, i.name) | {"trigger": r.trigger, "started_at": r.started_at, "worker_id": r.worker_id}
                for r in runs.list_for(rt.db, i.id, limit=limit)
            ]
        out.table(
            rows,
            [
                "run_id",
                "status",
                "trigger",
                "started_at",
                "listing",
                "list_requests",
                "files_new",
                "files_succeeded",
                "files_failed",
                "records_ingested",
                "duration_seconds",
            ],
            title=f"runs of {name}",
        )

    _guard(out, body)


def find_file(conn: Any, ingestion: Ingestion, path: str) -> dict[str, Any]:
    """The ledger row a user's KEY (below the prefix, of the bucket, or a full URI) names; exit 2 if none."""
    row = ledger.find_file(conn, ingestion.id, ingestions.file_uri_candidates(ingestion, path))
    if row is None:
        raise NotFoundError(f"no file {path!r} in ingestion {ingestion.name!r} (icefloe files {ingestion.name})")
    return row


def history_command(ctx: typer.Context, out: Output, name: str, path: str) -> None:
    """`icefloe files NAME --history KEY`: every attempt at one file."""
    with _runtime(ctx) as rt:
        i = ingestions.get(rt.db, name)
        with rt.db.connect() as conn:
            row = find_file(conn, i, path)
            history = ledger.attempts(conn, int(str(row["id"])))
    out.table(
        history,
        ["recorded_at", "version", "status", "error_type", "error_message", "run_id", "worker_id"],
        title=f"attempts at {row['file_path']}",
    )


@app.command("worker")
def worker_command(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(help="batches processed at once")] = 1,
    lease_seconds: Annotated[int | None, typer.Option(help="lease of a claim (default ICEFLOE_LEASE_SECONDS)")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus metrics on 127.0.0.1:PORT")] = None,
    metrics_host: Annotated[str, typer.Option(help="address for --metrics-port")] = "127.0.0.1",
    grace_seconds: Annotated[float, typer.Option(help="on SIGTERM, time to finish batches in flight")] = 30.0,
    poll_seconds: Annotated[float, typer.Option(help="idle wait between looks at the queue")] = 2.0,
) -> None:
    """Run queued and scheduled runs until SIGTERM/SIGINT; then finish or release the batch in flight."""
    out = Output(False)
    if concurrency < 1:
        out.error("--concurrency must be at least 1")
        raise typer.Exit(2)

    def body() -> int:
        settings = current_settings(ctx)
        if lease_seconds is not None:
            if lease_seconds < 3:
                raise ConfigurationError("--lease-seconds must be at least 3")
            settings = dataclasses.replace(settings, lease_seconds=lease_seconds)
        settings = dataclasses.replace(settings, read_threads=max(2, settings.read_threads // concurrency))
        from icefloe.runtime import Runtime

        rt = Runtime.open(settings)
        try:
            if metrics_port is not None:
                from icefloe import metrics

                metrics.serve(metrics_port, rt.db, host=metrics_host)
            from icefloe import daemon

            process = daemon.WorkerProcess(
                rt,
                concurrency=concurrency,
                grace_seconds=grace_seconds,
                poll_seconds=poll_seconds,
                housekeeping=_alerts_housekeeping(settings.alerts),
            )
            process.install_signal_handlers()
            process.run()
        finally:
            rt.close()
        return EXIT_OK

    raise typer.Exit(_guard(out, body))


def _alerts_housekeeping(settings: AlertSettings) -> Any:
    """Detect and deliver alerts from the worker's housekeeping loop."""
    from icefloe import alerts

    def tick(rt: Any) -> None:
        alerts.detect(rt.db)
        alerts.deliver(rt.db, settings)

    return tick
