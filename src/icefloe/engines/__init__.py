"""Engines read a claimed batch and stage it as Iceberg data files, ready for the commit protocol.

An engine never commits and never touches the ledger: the worker does both, the same way for
every engine, so the exactly-once protocol does not depend on the engine.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from icefloe.errors import FileError
from icefloe.ledger import Batch, ClaimedFile, FileOutcome


@dataclass
class StagedBatch:
    """What an engine made of a batch: data files not yet committed, and each file's fate."""

    table: Table | None = None
    data_files: list[DataFile] = field(default_factory=list)
    succeeded: list[FileOutcome] = field(default_factory=list)
    failed: list[tuple[ClaimedFile, FileError, int, int]] = field(default_factory=list)  # error, bytes, ms
    changed: list[ClaimedFile] = field(default_factory=list)  # HTTP 412: rediscover

    @property
    def records(self) -> int:
        return sum(o.records for o in self.succeeded)

    @property
    def bytes_read(self) -> int:
        return sum(o.bytes_read for o in self.succeeded) + sum(b for _, _, b, _ in self.failed)


class Engine(Protocol):
    """Reads the files of a batch and writes them as data files of the ingestion's table."""

    def stage(self, batch: Batch, cancelled: threading.Event) -> StagedBatch:
        """Stage ``batch``; stop early (raising LeaseLostError) once ``cancelled`` is set."""
        ...
