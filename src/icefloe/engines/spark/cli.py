"""``icefloe spark-server start|stop|status|install``: the local Spark Connect server.

Registered on the main app by ``icefloe.cli`` (``app.add_typer(spark_app, name="spark-server")``).
Nothing here imports pyspark: the server runs from its own virtualenv.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from icefloe.engines.spark import server
from icefloe.errors import ConfigurationError, IcefloeError
from icefloe.settings import Settings

spark_app = typer.Typer(
    no_args_is_help=True,
    help="A local Spark Connect server (pyspark 4.0 in its own venv, local[2], 127.0.0.1 only).",
)

EXIT_RUN_FAILED, EXIT_USAGE = 1, 2


def _dirs() -> tuple[Path, Path]:
    settings = Settings.from_env()
    return server.default_cache(settings.home), server.default_state_dir(settings.home)


def _fail(exc: IcefloeError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_RUN_FAILED)


@spark_app.command("install")
def install_command() -> None:
    """Install pyspark (own venv) and fetch the jars with Maven, into the cache; start nothing."""
    cache, _ = _dirs()
    try:
        spark_home, jar_files = server.install(cache)
    except IcefloeError as exc:
        raise _fail(exc) from None
    typer.echo(f"SPARK_HOME {spark_home}")
    for jar in jar_files:
        typer.echo(f"jar {jar}")


@spark_app.command("start")
def start_command(
    port: Annotated[int, typer.Option(help="gRPC port on 127.0.0.1")] = server.DEFAULT_PORT,
    driver_memory: Annotated[str, typer.Option(help="JVM heap of the driver (local mode: all of Spark)")] = (
        server.DEFAULT_DRIVER_MEMORY
    ),
    master: Annotated[str, typer.Option(help="Spark master")] = server.DEFAULT_MASTER,
    conf: Annotated[list[str] | None, typer.Option("--conf", help="extra Spark setting KEY=VALUE")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Start the server in the background (installing it on first use); prints its remote URL.

    S3A reads use this shell's AWS_ENDPOINT_URL / AWS_REGION / credentials. Point icefloe at it
    with ICEFLOE_SPARK_REMOTE=<the printed URL>.
    """
    cache, state_dir = _dirs()
    extra: dict[str, str] = {}
    for item in conf or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise _fail(ConfigurationError(f"--conf takes KEY=VALUE, got {item!r}"))
        extra[key] = value
    try:
        state = server.start(
            cache=cache,
            state_dir=state_dir,
            port=port,
            driver_memory=driver_memory,
            master=master,
            extra_conf=extra,
            log=not as_json,
        )
    except IcefloeError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(server.status(state_dir)))
    else:
        typer.echo(f"Spark Connect server running (pid {state.pid}, log {state.log_file})")
        typer.echo(f"export ICEFLOE_SPARK_REMOTE={state.remote}")


@spark_app.command("stop")
def stop_command() -> None:
    """Stop the server started by `start` (SIGTERM, SIGKILL after 30 s)."""
    _, state_dir = _dirs()
    state = server.stop(state_dir)
    typer.echo("no Spark Connect server running" if state is None else f"stopped (pid {state.pid})")


@spark_app.command("status")
def status_command(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Is the server running; its URL, pid, memory. Exit 1 when it is not running."""
    _, state_dir = _dirs()
    report = server.status(state_dir)
    if as_json:
        typer.echo(json.dumps(report))
    elif report["running"]:
        for key, value in report.items():
            typer.echo(f"{key}: {value}")
    else:
        typer.echo("not running")
    if not report["running"]:
        raise typer.Exit(EXIT_RUN_FAILED)
