"""Reaching icefloe's catalog from other tools: `icefloe services start|stop|status`, `icefloe catalog connect`.

Registered on the main app by importing this module (see the end of ``icefloe.cli``).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from icefloe import connect, services
from icefloe.cli import EXIT_USAGE, JsonOpt, Output, _guard, _runtime, app, current_settings

services_app = typer.Typer(
    no_args_is_help=True, help="Keep the embedded PostgreSQL (and S3) running on fixed ports for other tools."
)
catalog_app = typer.Typer(no_args_is_help=True, help="The Iceberg catalog icefloe writes to.")
app.add_typer(services_app, name="services")
app.add_typer(catalog_app, name="catalog")


def _describe(out: Output, state: dict[str, Any]) -> None:
    pg = state["postgres"]
    out.message(f"PostgreSQL (ledger and catalog): 127.0.0.1:{pg['port']}  {pg['url']}")
    if "s3" in state:
        out.message(f"S3 (SeaweedFS): {state['s3']['endpoint']}, data in {state['s3']['data_dir']}")
        out.message("to use it from a shell:")
        for key, value in state["s3"]["env"].items():
            out.message(f"  export {key}={value}")
    out.message("other engines: icefloe catalog connect --format pyiceberg|spark|duckdb|env")


@services_app.command("start")
def services_start(
    ctx: typer.Context,
    pg_port: Annotated[int, typer.Option("--pg-port", help="PostgreSQL's port on 127.0.0.1")] = (
        services.DEFAULT_PG_PORT
    ),
    s3: Annotated[bool, typer.Option("--s3", help="also run the embedded S3 (SeaweedFS), e.g. for the demo")] = False,
    s3_port: Annotated[int, typer.Option("--s3-port", help="the S3 port on 127.0.0.1")] = services.DEFAULT_S3_PORT,
    as_json: JsonOpt = False,
) -> None:
    """Start the embedded services of ICEFLOE_HOME in the background, until `icefloe services stop`."""
    out = Output(as_json)

    def body() -> None:
        settings = current_settings(ctx)
        state = services.start(settings.home, pg_port=pg_port, s3_port=s3_port if s3 else None)
        if as_json:
            out.json(state)
            return
        verb = "already running" if state.get("already_running") else "started"
        out.message(f"services of {settings.home} {verb} (stop: icefloe services stop)")
        _describe(out, state)

    _guard(out, body)


@services_app.command("stop")
def services_stop(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Stop what `icefloe services start` runs (PostgreSQL stops once no icefloe command uses it)."""
    out = Output(as_json)

    def body() -> None:
        settings = current_settings(ctx)
        stopped = services.stop(settings.home)
        if as_json:
            out.json({"stopped": stopped})
        else:
            out.message("services stopped" if stopped else f"no services were running for {settings.home}")

    _guard(out, body)


@services_app.command("status")
def services_status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """What `icefloe services start` runs, and where. Exit 3 when nothing runs."""
    out = Output(as_json)

    def body() -> int:
        settings = current_settings(ctx)
        state = services.status(settings.home)
        if as_json:
            out.json(state or {"running": False})
        elif state is None:
            out.message(f"no services running for {settings.home} (start: icefloe services start)")
        else:
            out.message(f"services of {settings.home} running (pid {state['pid']})")
            _describe(out, state)
        return 0 if state is not None else 3

    raise typer.Exit(_guard(out, body))


@catalog_app.command("connect")
def catalog_connect(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="pyiceberg | spark | duckdb | env")] = "pyiceberg",
    show_secrets: Annotated[bool, typer.Option("--show-secrets", help="print keys and passwords")] = False,
) -> None:
    """Print ready-to-paste configuration that reaches the catalog icefloe writes to."""
    out = Output(False)

    def body() -> None:
        if fmt not in connect.FORMATS:
            out.error(f"--format must be one of {', '.join(connect.FORMATS)}, got {fmt!r}")
            raise typer.Exit(EXIT_USAGE)
        with _runtime(ctx) as rt:
            state = services.status(rt.settings.home)
            text = connect.render(fmt, rt.settings, rt.catalog, state, show_secrets=show_secrets)
        sys.stdout.write(text + "\n")
        if not show_secrets and connect.REDACTED in text:
            out.warning("secrets are shown as <redacted>: --show-secrets prints them")

    _guard(out, body)
