"""Which Spark errors are one file's fault and which are the cluster's, as one readable line.

The Spark Connect client reports server-side failures as exceptions whose only structure is the
JVM error class and message text, so the classification reads that text — here, and nowhere else.
"""

from __future__ import annotations

_INFRASTRUCTURE_HINTS = (
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.CANCELLED",
    "failed to connect",
    "Connection refused",
    "Socket closed",
    "RetriesExceeded",
    "INVALID_HANDLE",
    "java.lang.OutOfMemoryError",
    "SparkContext was shut down",
    "SparkContext has been shutdown",
)


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as one readable line: Spark's message without its JVM stack trace."""
    text = str(exc)
    for marker in ("\nJVM stacktrace:", "\n\tat ", "\nStacktrace:"):
        text = text.split(marker, 1)[0]
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_infrastructure(exc: BaseException) -> bool:
    """The server, the connection or the JVM failed: not the fault of the files being read."""
    name = type(exc).__name__
    if name in ("RetriesExceeded", "SparkConnectException") or "grpc" in type(exc).__module__:
        return True
    text = str(exc)
    return any(h in text for h in _INFRASTRUCTURE_HINTS)


def file_error_type(message: str, fmt: str) -> str:
    """The ledger's ``error_type`` for a file Spark could not read (README, "Errors and retries")."""
    lower = message.lower()
    if "malformed" in lower or "failfast" in lower:
        return {"csv": "MalformedCSV", "jsonl": "MalformedJSON"}.get(fmt, "CorruptFile")
    if "header does not conform" in lower or "csv header" in lower:
        return "MalformedCSV"
    if "cast" in lower or "overflow" in lower or "cannot parse" in lower or "cannot_parse" in lower:
        return "SchemaMismatch"
    if "utf" in lower or "encoding" in lower:
        return "EncodingError"
    if any(h in lower for h in ("parquet", "magic", "gzip", "zlib", "eof", "compress", "footer", "codec")):
        return "CorruptFile"
    return "UnreadableFile"
