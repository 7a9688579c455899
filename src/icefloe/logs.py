"""Logging: human lines on a terminal, JSON lines otherwise, with run/batch/file context as fields.

Both formatters pass the message and any traceback through :func:`icefloe.redaction.redact_text`:
a library's record (urllib3 names the presigned URL it retries) never writes a signature out.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys

from icefloe.redaction import redact_text

# Fields passed with ``extra=`` that belong in every structured record that has them.
CONTEXT_FIELDS = ("run_id", "batch_id", "file_path", "ingestion", "worker_id", "error_type", "request_id")


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


def configure(level: int = logging.WARNING) -> None:
    """Log to stderr; ``ICEFLOE_LOG_FORMAT=json|text`` overrides the terminal-based choice."""
    fmt = os.environ.get("ICEFLOE_LOG_FORMAT") or ("text" if sys.stderr.isatty() else "json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter (pyiceberg, botocore) only from WARNING on, whatever our level.
    for noisy in ("botocore", "urllib3", "pyiceberg", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
