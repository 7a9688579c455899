"""`icefloe maintain NAME`: compaction, snapshot expiry and orphan removal of an ingestion's table.

Registered on the main app by importing this module (see the end of ``icefloe.cli``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from icefloe import ingestions
from icefloe.cli import JsonOpt, Output, _guard, _runtime, app
from icefloe.durations import parse_duration


@app.command("maintain")
def maintain_command(
    ctx: typer.Context,
    name: str,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be done; change nothing.")] = False,
    retention: Annotated[
        str | None,
        typer.Option(help="keep snapshots this long (default $ICEFLOE_SNAPSHOT_RETENTION or 7d; ≥ lease + 1d)"),
    ] = None,
    replace_window: Annotated[
        str,
        typer.Option(
            help="leave data files holding one source file's rows alone until this old, so a replace of that "
            "source drops them whole (0: compact them too)"
        ),
    ] = "1d",
    as_json: JsonOpt = False,
) -> None:
    """Compact the small data files of an ingestion's table, expire old snapshots, remove orphans."""
    out = Output(as_json)

    def body() -> None:
        from icefloe import maintenance  # on use: see icefloe.cli

        with _runtime(ctx) as rt:
            ingestion = ingestions.get(rt.db, name)
            report = maintenance.maintain(
                rt.db,
                rt.catalog,
                ingestion.table_identifier,
                lease_seconds=rt.settings.lease_seconds,
                retention_seconds=parse_duration(retention) if retention else rt.settings.snapshot_retention_seconds,
                replace_window_seconds=parse_duration(replace_window) if replace_window != "0" else 0,
                dry_run=dry_run,
            )
        if as_json:
            out.record(report)
            return
        c, e, o = report["compaction"], report["expiry"], report["orphans"]
        verb = "would rewrite" if dry_run else "rewrote"
        out.record(
            {
                "table": report["table"],
                "compaction": c["skipped"]
                or f"{verb} {c['files_rewritten']} of {c['small_files']} small files into {c['files_written']}"
                + (f" ({c['held_back']} one-source files kept for cheap replaces)" if c["held_back"] else ""),
                "snapshots expired": e["snapshots_expired"],
                "orphan files removed": o["orphans_removed"],
                "data files now": report["health"]["data_files"],
                "seconds": report["seconds"],
            },
            title=f"maintenance of {ingestion.name}" + (" (dry run)" if dry_run else ""),
        )

    _guard(out, body)
