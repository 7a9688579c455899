"""``icefloe serve``: the API under uvicorn, with a graceful shutdown.

On SIGTERM or SIGINT uvicorn stops accepting connections, lets the requests in flight finish (up to
``SHUTDOWN_GRACE_SECONDS``), then the app's lifespan ends: the in-process worker (if any) stops after
its batch in flight and hands its run back to the queue, and the ledger pool is closed.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import uvicorn

from icefloe.api.app import create_app
from icefloe.api.middleware import RequestIdFilter
from icefloe.settings import Settings

SHUTDOWN_GRACE_SECONDS = 30


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    with_worker: bool = False,
) -> bool:
    """Serve until a signal stops the server; False when the app could not start."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    app = create_app(settings, with_worker=with_worker)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep icefloe's logging (icefloe.logs); uvicorn's loggers propagate to it
        access_log=False,  # icefloe.api.access logs each request, with its request id, no query string
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down, under the handler that was
    # in place before it started: a no-op one makes a graceful shutdown exit with status 0.
    stopping = (signal.SIGINT, signal.SIGTERM)
    previous = [(sig, signal.signal(sig, _ignore)) for sig in stopping]
    try:
        server.run()
    finally:
        for sig, old in previous:
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
    return server.started


def _ignore(signum: int, frame: Any) -> None:
    pass
