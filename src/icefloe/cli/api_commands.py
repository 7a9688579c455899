"""CLI commands of the REST API: `serve` and `token create|list|revoke`.

Registered on the main app by importing this module (see the end of ``icefloe.cli``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated

import typer

from icefloe import logs, tokens
from icefloe.cli import EXIT_RUN_FAILED, JsonOpt, Output, _guard, _runtime, app, current_settings

token_app = typer.Typer(no_args_is_help=True, help="API tokens of the REST API.")
app.add_typer(token_app, name="token")


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    with_worker: Annotated[
        bool, typer.Option("--with-worker", help="also execute queued runs in this process")
    ] = False,
    public_docs: Annotated[
        bool,
        typer.Option("--public-docs", help="serve /docs (Swagger UI) and /openapi.json without a token"),
    ] = False,
) -> None:
    """Serve the REST API (/api/v1, /healthz, /readyz, /metrics, /openapi.json) until SIGTERM/SIGINT."""
    from icefloe import api  # FastAPI and uvicorn load only for this command

    out = Output(False)

    def body() -> bool:
        settings = current_settings(ctx)
        if public_docs:
            settings = dataclasses.replace(settings, api=dataclasses.replace(settings.api, docs_public=True))
        logs.configure(logging.INFO, fmt=settings.log_format)
        return api.serve(settings, host=host, port=port, with_worker=with_worker)

    if not _guard(out, body):
        raise typer.Exit(EXIT_RUN_FAILED)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="who or what uses it")],
    role: Annotated[str, typer.Option("--role", help="reader | operator | admin")],
    as_json: JsonOpt = False,
) -> None:
    """Create an API token; its secret is printed this once (only its hash is stored)."""
    out = Output(as_json)

    def body() -> None:
        with _runtime(ctx) as rt:
            token, secret = tokens.create(rt.db, name=name, role=role)
        if as_json:
            out.json({"name": token.name, "role": token.role, "token": secret})
        else:
            out.message(f"token {token.name} ({token.role}); store it now, it is not shown again:")
            print(secret)

    _guard(out, body)


@token_app.command("list")
def token_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List API tokens (never their secrets), revoked ones included."""
    out = Output(as_json)

    def body() -> None:
        with _runtime(ctx) as rt:
            rows = [
                {
                    "name": t.name,
                    "role": t.role,
                    "created_at": t.created_at,
                    "last_used_at": t.last_used_at,
                    "revoked_at": t.revoked_at,
                }
                for t in tokens.list_all(rt.db)
            ]
        out.table(rows, ["name", "role", "created_at", "last_used_at", "revoked_at"], title="API tokens")

    _guard(out, body)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: str) -> None:
    """Revoke an API token: it stops working at once."""
    out = Output(False)

    def body() -> None:
        with _runtime(ctx) as rt:
            tokens.revoke(rt.db, name)
        out.message(f"revoked token {name}")

    _guard(out, body)
