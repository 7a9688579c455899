"""`icefloe files`: the ledger of an ingestion, and what an operator does to one file.

`icefloe files NAME` lists (as it always has); `icefloe files retry|skip|reingest NAME KEY` act on
one file through :mod:`icefloe.file_operations`, the functions the API and the dashboard call too.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from icefloe import file_operations, ingestions, ledger
from icefloe.cli import JsonOpt, Output, _guard, _runtime, app
from icefloe.cli.operations import history_command


class _ListByDefault(TyperGroup):
    """`icefloe files NAME …` means `icefloe files list NAME …`: the subcommands came later, and
    scripts list the ledger. An ingestion named like a subcommand is listed with `files list NAME`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer vendors click: its Context is private
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


files_app = typer.Typer(
    cls=_ListByDefault,
    no_args_is_help=True,
    help="The ledger of one ingestion (icefloe files NAME), and retry|skip|reingest of one file.",
)
app.add_typer(files_app, name="files")
Key = Annotated[str, typer.Argument(help="the file: its key below the prefix, its bucket key, or its URI")]


@files_app.command("list")
def files_list(
    ctx: typer.Context,
    name: str,
    status: Annotated[str | None, typer.Option(help="DISCOVERED|PROCESSING|SUCCESS|FAILED|SKIPPED|HELD")] = None,
    limit: Annotated[int, typer.Option()] = 1000,
    history: Annotated[str | None, typer.Option(help="every attempt at this file (key or s3:// URI)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The ledger of one ingestion (the default: `icefloe files NAME`)."""
    out = Output(as_json)

    def body() -> None:
        if history is not None:
            history_command(ctx, out, name, history)
            return
        with _runtime(ctx) as rt:
            i = ingestions.get(rt.db, name)
            with rt.db.connect() as conn:
                rows = ledger.list_files(conn, i.id, status=status.upper() if status else None, limit=limit)
        if as_json:
            out.json(rows)
            return
        # The key below the prefix: short enough for 80 columns, and what --history and retry take.
        shown = [r | {"key": ingestions.key_below_prefix(i, str(r["file_path"]))} for r in rows]
        out.table(
            shown,
            ["key", "status", "records_ingested", "retry_count", "error_type", "error_message"],
            title=f"files of {name} (keys below {i.source})",
            keep=["key"],
        )

    _guard(out, body)


def _act(ctx: typer.Context, out: Output, name: str, action: Any) -> None:
    def body() -> None:
        with _runtime(ctx) as rt:
            i = ingestions.get(rt.db, name)
            done: file_operations.FileAction = action(rt.db, i)
        if out.as_json:
            out.json({"ingestion": i.name} | done.__dict__)
        else:
            then = f" (icefloe run {i.name})" if done.status == "DISCOVERED" else ""
            out.message(f"{done.file_path}: {done.action} done, now {done.status} (version {done.version}){then}")

    _guard(out, body)


@files_app.command("retry")
def files_retry(ctx: typer.Context, name: str, key: Key, as_json: JsonOpt = False) -> None:
    """Make one FAILED file claimable now, with a fresh retry budget."""
    _act(ctx, Output(as_json), name, lambda db, i: file_operations.retry_file(db, i, key, actor="cli"))


@files_app.command("skip")
def files_skip(
    ctx: typer.Context,
    name: str,
    key: Key,
    reason: Annotated[str, typer.Option(help="why (kept in the ledger and the file's history)")],
    as_json: JsonOpt = False,
) -> None:
    """Set one file not yet ingested aside: SKIPPED with a reason, until its content changes."""
    _act(ctx, Output(as_json), name, lambda db, i: file_operations.skip_file(db, i, key, reason, actor="cli"))


@files_app.command("reingest")
def files_reingest(
    ctx: typer.Context,
    name: str,
    key: Key,
    allow_duplicates: Annotated[
        bool, typer.Option("--allow-duplicates", help="under --on-change append: add its rows a second time")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read one file again; under --on-change replace its rows are replaced, exactly once."""
    _act(
        ctx,
        Output(as_json),
        name,
        lambda db, i: file_operations.reingest_file(db, i, key, actor="cli", allow_duplicates=allow_duplicates),
    )
