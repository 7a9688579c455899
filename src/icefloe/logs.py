"""Logging: human lines on a terminal, JSON lines otherwise, with run/batch/file context as fields.

The context comes from :func:`run_context` (a context variable), added to every record by
:class:`RunContextFilter` on icefloe's handler: code logs plain messages, not ``extra=`` dicts.
Context variables do not follow work into thread-pool threads by themselves: submit with
``contextvars.copy_context().run`` where records from those threads must carry it.

Both formatters pass the message and any traceback through :func:`icefloe.redaction.redact_text`:
a library's record (urllib3 names the presigned URL it retries) never writes a signature out.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Literal

from icefloe.redaction import redact_text

# Fields of the run context (or passed with ``extra=``) that belong in every structured record.
CONTEXT_FIELDS = ("run_id", "batch_id", "file_path", "ingestion", "worker_id", "error_type", "request_id")

# An immutable mapping, replaced (never changed) by each run_context block.
_run_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "icefloe_run_context", default=MappingProxyType({})
)


@contextmanager
def run_context(**fields: object) -> Iterator[None]:
    """Within the block, records carry ``fields`` (run_id, batch_id, ingestion, file_path…)
    on top of the enclosing context; a field given None is left out."""
    merged = {**_run_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _run_context.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _run_context.reset(token)


def current_context() -> Mapping[str, object]:
    """The fields :func:`run_context` set in this thread's context."""
    return _run_context.get()


class RunContextFilter(logging.Filter):
    """Copies the run context onto each record (a field passed with ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _run_context.get().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the context fields present."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = str(value) if not isinstance(value, int | float) else value
        if record.exc_info:
            data["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(data)


class TextFormatter(logging.Formatter):
    """``time level logger: message [k=v …]`` with the context fields appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = redact_text(super().format(record))
        context = [f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS if getattr(record, n, None) is not None]
        return f"{line} [{' '.join(context)}]" if context else line


def configure(level: int = logging.WARNING, fmt: Literal["json", "text"] | None = None) -> None:
    """Log to stderr, as ``fmt`` (``Settings.log_format``; None: text on a terminal, else JSON)."""
    fmt = fmt or ("text" if sys.stderr.isatty() else "json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RunContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter (pyiceberg, botocore) only from WARNING on, whatever our level.
    for noisy in ("botocore", "urllib3", "pyiceberg", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
