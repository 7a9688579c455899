"""Engines read a claimed batch and stage it as Iceberg data files, ready for the commit protocol.

An engine never touches the ledger, and commits only when :mod:`icefloe.commit` asks it to,
under the per-table lock, after the fencing check and the snapshot search: the exactly-once
protocol does not depend on the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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
    # How to commit, for engines whose writer commits itself (Spark's writeTo): called by
    # commit.py under the lock with (table, snapshot properties, _source_file values to replace)
    # and returns (snapshot id of the batch, snapshots added). None: append ``data_files``.
    commit: Callable[[Table, dict[str, str], list[str]], tuple[int, int]] | None = None

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
