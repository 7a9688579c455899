"""`icefloe validate NAME`: what a run would make of the files not yet ingested, committing nothing."""

from __future__ import annotations

from typing import Annotated

import typer

from icefloe import ingestions
from icefloe.cli import JsonOpt, Output, _guard, _runtime, app
from icefloe.errors import IcefloeError


@app.command("validate")
def validate_command(
    ctx: typer.Context,
    name: str,
    limit: Annotated[int, typer.Option(help="files to read at most")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Dry run over DISCOVERED and FAILED files: records, bad records, new columns; changes nothing."""
    out = Output(as_json)

    def body() -> None:
        from icefloe.validate import validate  # on use: see icefloe.cli

        with _runtime(ctx) as rt:
            i = ingestions.get(rt.db, name)
            result = validate(rt, i, limit=limit)
        reports = result["items"]
        if as_json:
            out.json(result)
        if result["error_type"] is not None:
            raise IcefloeError(result["error_message"])  # a run would fail before reading a file: exit 1
        if as_json:
            return
        shown = [
            r
            | {
                "key": ingestions.key_below_prefix(i, str(r["file_path"])),
                "schema_change": r.get("schema_change")
                or ", ".join(f"adds {k} ({v})" for k, v in r["new_columns"].items()),
                "first_errors": "; ".join(r["errors"]) or r.get("error_message") or "",
            }
            for r in reports
        ]
        out.table(
            shown,
            ["key", "status", "verdict", "records", "bad_records", "schema_change", "first_errors"],
            title=f"validation of {name}: {len(reports)} file(s) not yet ingested (nothing committed)",
            keep=["key"],
        )

    _guard(out, body)
