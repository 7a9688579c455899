"""Looking at what was ingested: `icefloe sql`, `icefloe table list|show|preview`.

Registered on the main app by importing this module (see the end of ``icefloe.cli``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from icefloe import query
from icefloe.cli import JsonOpt, Output, _guard, _runtime, app
from icefloe.errors import NotFoundError
from icefloe.identifiers import split_identifier

table_app = typer.Typer(no_args_is_help=True, help="The Iceberg tables of the catalog icefloe writes.")
app.add_typer(table_app, name="table")

LimitOpt = Annotated[int, typer.Option("--limit", help="at most N rows (0: all)", min=0)]


def _print_result(out: Output, result: query.QueryResult, limit: int) -> None:
    if out.as_json:
        out.json(result.records())
        return
    out.table(result.records(), result.columns)
    if result.truncated:
        out.warning(f"showing the first {limit} rows; --limit N for more (0: all)")


@app.command("sql")
def sql_command(
    ctx: typer.Context,
    statement: Annotated[str, typer.Argument(metavar="QUERY", help='e.g. "SELECT count(*) FROM demo.events"')],
    limit: LimitOpt = 100,
    as_json: JsonOpt = False,
) -> None:
    """Read-only SQL (DuckDB) over the catalog's Iceberg tables, named namespace.table."""
    out = Output(as_json)

    def body() -> None:
        with _runtime(ctx) as rt:
            result = query.run(rt.catalog, statement, limit=limit or None)
        _print_result(out, result, limit)

    _guard(out, body)


@table_app.command("list")
def table_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every table of the catalog, as namespace.table."""
    out = Output(as_json)

    def body() -> None:
        with _runtime(ctx) as rt:
            catalog = rt.catalog
            names = [
                ".".join(identifier)
                for namespace in catalog.list_namespaces()
                for identifier in catalog.list_tables(namespace)
            ]
        out.table([{"table": name} for name in sorted(names)], ["table"], title="tables")

    _guard(out, body)


def _load(rt: Any, identifier: str) -> Any:
    from icefloe import tables  # on use: see icefloe.cli

    split_identifier(identifier)
    table = tables.load_table(rt.catalog, identifier)
    if table is None:
        raise NotFoundError(f"no Iceberg table {identifier} in the catalog (icefloe table list)")
    return table


@table_app.command("show")
def table_show(
    ctx: typer.Context,
    identifier: Annotated[str, typer.Argument(metavar="NAMESPACE.TABLE")],
    snapshots: Annotated[int, typer.Option("--snapshots", help="the last N snapshots", min=0)] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Schema (with icefloe's columns), rows, data files and their sizes, snapshots, location."""
    out = Output(as_json)

    def body() -> None:
        from icefloe import tables  # on use: see icefloe.cli

        with _runtime(ctx) as rt:
            info = tables.summary(_load(rt, identifier))
        if as_json:
            out.json(info)
            return
        head = {
            k: info[k]
            for k in ("location", "metadata_location", "rows", "data_files", "data_bytes", "average_file_bytes")
        }
        head["small_files"] = f"{info['small_files']} (under {info['small_file_threshold_bytes']} bytes)"
        out.record(head, title=f"table {info['table']}")
        columns = [c | {"note": "added by icefloe" if c["added_by_icefloe"] else ""} for c in info["columns"]]
        out.table(columns, ["id", "name", "type", "required", "note"], title="columns")
        recent = info["snapshots"][-snapshots:] if snapshots else []
        out.table(
            recent,
            ["snapshot_id", "committed_at", "operation", "added_records", "run_id", "batch_id"],
            title=f"snapshots (last {len(recent)} of {len(info['snapshots'])})",
        )

    _guard(out, body)


@table_app.command("preview")
def table_preview(
    ctx: typer.Context,
    identifier: Annotated[str, typer.Argument(metavar="NAMESPACE.TABLE")],
    limit: LimitOpt = 10,
    as_json: JsonOpt = False,
) -> None:
    """The first rows of a table (icefloe sql "SELECT * FROM ns.table LIMIT N")."""
    out = Output(as_json)

    def body() -> None:
        namespace, name = split_identifier(identifier)
        quoted = ".".join('"' + part.replace('"', '""') + '"' for part in [*namespace.split("."), name])
        statement = f"SELECT * FROM {quoted}" + (f" LIMIT {limit}" if limit else "")
        with _runtime(ctx) as rt:
            result = query.run(rt.catalog, statement, limit=None)
        _print_result(out, result, limit)

    _guard(out, body)
