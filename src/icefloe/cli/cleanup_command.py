"""`icefloe cleanup NAME [--dry-run]`: the source clean-up after ingestion (``--after-ingest``), now.

Registered on the main app by importing this module (see the end of ``icefloe.cli``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from icefloe import ingestions
from icefloe.cli import JsonOpt, Output, _guard, _runtime, app


@app.command("cleanup")
def cleanup_command(
    ctx: typer.Context,
    name: str,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be cleaned up; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete, move or tag the source files ingested longer ago than --after-ingest-delay."""
    out = Output(as_json)

    def body() -> None:
        from icefloe import cleanup  # on use: see icefloe.cli

        with _runtime(ctx) as rt:
            ingestion = ingestions.get(rt.db, name)
            report = cleanup.clean(rt.db, rt.catalog, rt.s3, ingestion, stores=rt.store, dry_run=dry_run)
        if as_json:
            out.json(report.as_dict())
            return
        if report.action == "keep":
            out.message(f"{name} keeps its source files (--after-ingest keep): nothing to clean up")
        elif report.busy:
            out.message(f"a clean-up of {name} is already running elsewhere; try again later")
        elif dry_run:
            out.table(
                report.files,
                ["file_path", "action", "destination", "blocked"],
                title=f"{len(report.files)} file(s) of {name} that a clean-up ({report.action}) would touch",
                keep=["file_path", "destination"],
            )
        else:
            out.message(f"{name}: {report.cleaned} file(s) cleaned up ({report.action}), {report.failed} failed")
            if report.failed:
                out.message(f"see icefloe files {name} --json (cleanup_status FAILED, cleanup_error)", style="yellow")

    _guard(out, body)
