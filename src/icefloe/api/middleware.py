"""Per-request context: a request id, one access-log line, and the request metrics.

A plain ASGI middleware (no ``BaseHTTPMiddleware``: it would buffer and re-task every request).
The request id is the caller's ``X-Request-ID`` when it looks like one, else a new one; it is sent
back in ``X-Request-ID``, put in every problem body, and on every log record made while the request
is handled (:class:`RequestIdFilter`, through a context variable that follows the request into the
threads that run the routes). The access log names the method, the path (never the query string or
a header: no secret reaches the log), the status, the duration and the token's name.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("icefloe.api.access")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("icefloe_request_id", default=None)

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Label values of the request metrics come from fixed sets: anyone, even without a token, chooses
# the method and path of a request, and each new label value is a new series kept forever.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUSES = frozenset({200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 429, 500, 503})


def method_label(method: str) -> str:
    """The request's method if it is a standard one, else "other"."""
    return method if method in _METHODS else "other"


def status_label(status: int) -> str:
    """The status code if the API uses it, else its class ("5xx")."""
    return str(status) if status in _STATUSES else f"{status // 100}xx"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records made while a request is handled (for handlers' formatters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class RequestMetrics:
    """The API's own Prometheus metrics, in a registry of this app (not the process-wide one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "icefloe_api_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "icefloe_api_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )


class RouteTemplates:
    """Path → route template (``/api/v1/runs/42`` → ``/api/v1/runs/{run_id}``): the metrics label,
    bounded whatever paths clients send ("unmatched" for a path no route serves)."""

    def __init__(self, templates: Iterable[str]) -> None:
        self._patterns = [(compile_path(t)[0], t) for t in sorted(templates, key=lambda t: t.count("{"))]

    def __call__(self, path: str) -> str:
        return next((t for pattern, t in self._patterns if pattern.match(path)), "unmatched")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: RequestMetrics, routes: RouteTemplates) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        reset = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = self.routes(scope["path"])
            method = method_label(scope["method"])
            self.metrics.requests.labels(method, route, status_label(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            token = scope.get("state", {}).get("token_name")
            access_log.info(
                "%s %s %d %.1fms%s",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
                f" token={token}" if token else "",
                extra={"request_id": request_id},
            )
            request_id_var.reset(reset)
