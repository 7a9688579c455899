"""`icefloe schema pending|approve|reject|history`: the schema changes of an ingestion's table.

Registered on the main app by importing this module (see the end of ``icefloe.cli``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from icefloe import ingestions
from icefloe.cli import JsonOpt, Output, _guard, _runtime, app

schema_app = typer.Typer(no_args_is_help=True, help="Schema changes: approve or reject them, see the history.")
app.add_typer(schema_app, name="schema")

ChangeId = Annotated[int, typer.Argument(metavar="ID", help="the change's id (icefloe schema pending NAME)", min=1)]


@schema_app.command("pending")
def schema_pending(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Changes waiting for approval (--schema-evolution approve), with the files held for each."""
    out = Output(as_json)

    def body() -> None:
        from icefloe import schema_changes  # on use: see icefloe.cli

        with _runtime(ctx) as rt:
            changes = schema_changes.pending(rt.db, ingestions.get(rt.db, name))
        rows = [schema_changes.as_dict(c) for c in changes]
        if as_json:
            out.json(rows)
            return
        if not rows:
            out.message(f"no schema change of {name} waits for approval")
            return
        out.table(rows, ["id", "description", "files", "first_file", "detected_at"], title=f"pending changes of {name}")
        out.message(f"icefloe schema approve {name} ID  (or reject)")

    _guard(out, body)


@schema_app.command("approve")
def schema_approve(ctx: typer.Context, name: str, change_id: ChangeId, as_json: JsonOpt = False) -> None:
    """Apply the change to the table; its held files are ingested by the next run."""
    out = Output(as_json)

    def body() -> None:
        from icefloe import schema_changes  # on use: see icefloe.cli

        with _runtime(ctx) as rt:
            decision = schema_changes.approve(
                rt.db, rt.catalog, ingestions.get(rt.db, name), change_id, actor=schema_changes.CLI_ACTOR
            )
        if as_json:
            out.json(schema_changes.as_dict(decision))
            return
        out.message(
            f"approved change {decision.id} ({decision.description}): table schema {decision.schema_id}; "
            f"{decision.files} file(s) will be ingested by the next run (icefloe run {name})"
        )

    _guard(out, body)


@schema_app.command("reject")
def schema_reject(ctx: typer.Context, name: str, change_id: ChangeId, as_json: JsonOpt = False) -> None:
    """Refuse the change: its held files become FAILED (SchemaRejected)."""
    out = Output(as_json)

    def body() -> None:
        from icefloe import schema_changes  # on use: see icefloe.cli

        with _runtime(ctx) as rt:
            decision = schema_changes.reject(
                rt.db, ingestions.get(rt.db, name), change_id, actor=schema_changes.CLI_ACTOR
            )
        if as_json:
            out.json(schema_changes.as_dict(decision))
            return
        out.message(f"rejected change {decision.id} ({decision.description}): {decision.files} file(s) FAILED")

    _guard(out, body)


@schema_app.command("history")
def schema_history(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Every schema version icefloe gave the table: schema id, change, file, approver, when."""
    out = Output(as_json)

    def body() -> None:
        from icefloe import schema_changes  # on use: see icefloe.cli

        with _runtime(ctx) as rt:
            versions = schema_changes.history(rt.db, ingestions.get(rt.db, name))
        rows = [schema_changes.as_dict(v) for v in versions]
        out.table(
            rows, ["schema_id", "status", "description", "file", "approved_by", "at"], title=f"schema history of {name}"
        )

    _guard(out, body)
