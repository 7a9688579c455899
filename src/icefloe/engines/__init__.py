"""Engines: the seam between the exactly-once protocol and the reading and writing of rows.

An engine does two things, both asked by :mod:`icefloe.commit`:

- :meth:`Engine.stage` reads a claimed batch and prepares its rows for the table (the arrow engine
  writes Parquet data files; Spark caches a DataFrame), outside any lock, and says what became of
  each file (succeeded, failed, changed since listing);
- :meth:`Engine.commit` makes the one Iceberg commit of a staged batch, carrying the snapshot
  properties — called under the per-table lock, after the fencing check and the snapshot search.

An engine never touches the ledger, so the delivery guarantee does not depend on it. Engines are
loaded by name with :func:`load_engine`: ``arrow`` is built in, ``spark`` is the optional extra
``icefloe[spark]``, imported only when an ingestion asks for it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from icefloe.errors import ConfigurationError, FileError

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

    from icefloe.badrecords import BadRecord
    from icefloe.evolution import SchemaDiff
    from icefloe.ledger import Batch, ClaimedFile, FileOutcome
    from icefloe.models import Ingestion
    from icefloe.runtime import Runtime
    from icefloe.schema_changes import HeldFile
    from icefloe.settings import Settings


@dataclass(frozen=True)
class FailedFile:
    """A file of a batch that could not be ingested, and what reading it cost."""

    file: ClaimedFile
    error: FileError
    bytes_read: int = 0
    duration_ms: int = 0


@dataclass
class StagedBatch:
    """What an engine made of a batch: rows ready to commit, and each file's fate."""

    table: Table | None = None
    data_files: list[DataFile] = field(default_factory=list)  # written, not committed (arrow)
    succeeded: list[FileOutcome] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    changed: list[ClaimedFile] = field(default_factory=list)  # changed since listing: rediscover
    held: list[HeldFile] = field(default_factory=list)  # schema change pending approval: HELD
    created_by: str | None = None  # the file the table was created for, in this batch
    evolved_by: str | None = None  # the first file whose columns ``table`` was evolved for (add-columns)
    # Bad records of read files by file id, under --on-bad-record quarantine (committed for succeeded ones).
    bad_records: dict[int, list[BadRecord]] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(o.records for o in self.succeeded)

    @property
    def rejected(self) -> int:
        """Bad records of the succeeded files (skipped or quarantined)."""
        return sum(o.rejected for o in self.succeeded)

    @property
    def bytes_read(self) -> int:
        return sum(o.bytes_read for o in self.succeeded) + sum(f.bytes_read for f in self.failed)


@dataclass(frozen=True)
class Committed:
    """The snapshot that holds a batch, and how many snapshots its commit added (delete + append)."""

    snapshot_id: int
    snapshots: int
    schema_change: SchemaDiff | None = None  # what the commit changed in the table's schema
    schema_id: int | None = None  # the table's schema id after the commit


class Engine(Protocol):
    """Reads the files of a batch and commits their rows to the ingestion's table."""

    def stage(self, batch: Batch, cancelled: threading.Event) -> StagedBatch:
        """Stage ``batch``; stop early (raising LeaseLostError) once ``cancelled`` is set."""
        ...

    def commit(self, table: Table, staged: StagedBatch, properties: dict[str, str], replaced: list[str]) -> Committed:
        """One Iceberg commit of ``staged`` with ``properties`` in its snapshot summary, deleting in the
        same transaction the rows whose ``_source_file`` is in ``replaced``.

        Raises :class:`~icefloe.errors.CommitConflictError` when the table head moved,
        :class:`~icefloe.errors.CommitOutcomeUnknownError` when the commit may have landed, and
        :class:`~icefloe.errors.CommitError` when it surely did not.
        """
        ...


@dataclass(frozen=True)
class _Registered:
    # Defines ``build(rt, ingestion) -> Engine``, and may define ``prepare(settings, files)``: work
    # that :func:`warm_up` can do ahead of the first batch of ``files`` (found so far) — the arrow
    # engine starts its parser children.
    module: str
    requires: str | None = None  # a module that must be importable (the optional extra's)
    extra: str | None = None


ENGINES = {
    "arrow": _Registered("icefloe.engines.arrow"),
    "spark": _Registered("icefloe.engines.spark.engine", "pyspark.sql.connect.session", "icefloe[spark]"),
}


def require(name: str) -> None:
    """Raise a one-line :class:`ConfigurationError` unless engine ``name`` can be loaded here."""
    registered = ENGINES.get(name)
    if registered is None:
        raise ConfigurationError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if registered.requires is None:
        return
    try:
        found = importlib.util.find_spec(registered.requires) is not None
    except ImportError:
        found = False
    if not found:
        raise ConfigurationError(
            f"the {name} engine needs {registered.requires.split('.')[0]}: pip install '{registered.extra}'"
        )


def load_engine(name: str, rt: Runtime, ingestion: Ingestion) -> Engine:
    """The engine ``name`` for ``ingestion``, its module imported only now."""
    require(name)
    module = importlib.import_module(ENGINES[name].module)
    engine: Engine = module.build(rt, ingestion)
    return engine


_WARMING: set[str] = set()


def warm_up(name: str, settings: Settings, files: int) -> None:
    """Import engine ``name``'s module in a background thread (pyarrow and pyiceberg take 1-2 s) and
    run its ``prepare`` for the ``files`` found so far, overlapping the listing that found them;
    :func:`load_engine` then finds it ready. Errors are left for :func:`load_engine` to report."""
    registered = ENGINES.get(name)
    if registered is None or registered.module in sys.modules or name in _WARMING:
        return
    _WARMING.add(name)

    def imported() -> None:
        with contextlib.suppress(Exception):
            module = importlib.import_module(registered.module)
            prepare = getattr(module, "prepare", None)
            if prepare is not None:
                prepare(settings, files)

    threading.Thread(target=imported, name=f"icefloe-warm-{name}", daemon=True).start()
