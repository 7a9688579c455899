"""Settings, built once from the environment in ``main()`` and passed down.

Nothing here is read at import time, so tests build their own :class:`Settings`.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from icefloe.errors import ConfigurationError
from icefloe.schema import DEFAULT_MAX_NESTING, MAX_NESTING_LIMIT

DEFAULT_MAX_LINE_BYTES = 256 << 20

DEFAULT_LEASE_SECONDS = 60


@dataclass(frozen=True)
class Settings:
    """Everything icefloe needs to know about its environment.

    ``database_url`` None means "the embedded PostgreSQL under ``home``"; ``catalog_name`` None
    means "a pyiceberg SQL catalog in the ledger database, warehouse under ``home``".
    """

    home: Path
    database_url: str | None = None
    catalog_name: str | None = None
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    # Parallel GETs + parses per batch (pyarrow releases the GIL while parsing).
    read_threads: int = 8
    # Levels of struct/list/map a column may nest; deeper files are FAILED (InvalidSchema).
    max_nesting: int = DEFAULT_MAX_NESTING
    # Longest line (record) of a text file; longer lines fail the file (LineTooLong).
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    # Child processes parsing fetched files (a parser crash costs one file); 0: parse in-process.
    parser_processes: int = field(default_factory=lambda: max(1, os.cpu_count() or 2))

    @property
    def warehouse(self) -> str:
        """Default warehouse location of the embedded catalog."""
        return (self.home / "warehouse").resolve().as_uri()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read ``ICEFLOE_*`` variables; the AWS SDK reads its own."""
        env = os.environ if environ is None else environ
        home = Path(env.get("ICEFLOE_HOME") or Path.home() / ".icefloe").expanduser()
        lease_raw = env.get("ICEFLOE_LEASE_SECONDS", str(DEFAULT_LEASE_SECONDS))
        try:
            lease = int(lease_raw)
        except ValueError:
            raise ConfigurationError(f"ICEFLOE_LEASE_SECONDS must be an integer, got {lease_raw!r}") from None
        if lease < 3:
            raise ConfigurationError(f"ICEFLOE_LEASE_SECONDS must be at least 3, got {lease}")
        threads_raw = env.get("ICEFLOE_READ_THREADS", "8")
        try:
            threads = max(1, int(threads_raw))
        except ValueError:
            raise ConfigurationError(f"ICEFLOE_READ_THREADS must be an integer, got {threads_raw!r}") from None
        nesting = _int_setting(env, "ICEFLOE_MAX_NESTING", DEFAULT_MAX_NESTING, 1, MAX_NESTING_LIMIT)
        line_bytes = _int_setting(env, "ICEFLOE_MAX_LINE_BYTES", DEFAULT_MAX_LINE_BYTES, 1 << 20, 2**31 - 1)
        parsers = _int_setting(env, "ICEFLOE_PARSER_PROCESSES", max(1, os.cpu_count() or 2), 0, 64)
        url = env.get("ICEFLOE_DATABASE_URL") or None
        if url and url.startswith("postgresql://"):
            # Accept libpq-style URLs too; SQLAlchemy needs the driver spelled out.
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return cls(
            home=home,
            database_url=url,
            catalog_name=env.get("ICEFLOE_CATALOG") or None,
            lease_seconds=lease,
            read_threads=threads,
            max_nesting=nesting,
            max_line_bytes=line_bytes,
            parser_processes=parsers,
        )


def _int_setting(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value
