"""Table maintenance (`icefloe maintain`): compaction, snapshot expiry, orphan data file removal.

Every step keeps the exactly-once protocol (:mod:`icefloe.commit`) intact:

- **compaction** bin-packs the small data files icefloe wrote into files of about the target size
  in one ``overwrite`` commit (old files deleted, new ones added); a file holding one source file's
  rows only is left alone until older than the replace window, so that replacing a recent source
  still drops its files whole. It takes the per-table commit lock, so it never races an icefloe
  commit, and before committing it checks that every file it read is still live in the table head
  (a ``replace`` may have rewritten one meanwhile): if not it plans again; rows are never lost or
  doubled. Its snapshot carries ``icefloe.maintenance`` and no ``icefloe.batch-id``, so the
  snapshot search never mistakes it for a batch;
- **snapshot expiry** never removes a snapshot younger than the recovery window (the retention,
  at least lease + 1 day) nor one taken after the first claim of a file still PROCESSING, so the
  snapshot search finds every batch whose outcome is not settled yet;
- **orphan removal** deletes only data files under the table's ``data/`` folder that no snapshot
  in the metadata references, older than that same cutoff: a file of a batch whose outcome is
  unknown (PROCESSING in the ledger) is younger than its first claim and is spared until the
  batch is resolved.

pyiceberg 0.12 has no compaction (iceberg-python #1092); :mod:`.compaction` builds it on its primitives
(``ArrowScan`` to read, :func:`icefloe.tables.write_data_files` to write, ``overwrite`` to commit).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from icefloe.ledger import LockBounds
from icefloe.maintenance.compaction import DEFAULT_REPLACE_WINDOW_SECONDS, Compaction, compact, plan_bins
from icefloe.maintenance.health import (
    MAINTENANCE_PROPERTY,
    SMALL_FILE_BYTES,
    live_data_files,
    load,
    referenced_paths,
    table_health,
)
from icefloe.maintenance.retention import (
    DEFAULT_RETENTION_SECONDS,
    bare,
    check_retention,
    expire_snapshots,
    processing_first_claims,
    protected_since,
    remove_orphans,
)

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from sqlalchemy import Engine

__all__ = [
    "DEFAULT_REPLACE_WINDOW_SECONDS",
    "DEFAULT_RETENTION_SECONDS",
    "MAINTENANCE_PROPERTY",
    "SMALL_FILE_BYTES",
    "Compaction",
    "bare",
    "check_retention",
    "compact",
    "expire_snapshots",
    "live_data_files",
    "maintain",
    "plan_bins",
    "protected_since",
    "referenced_paths",
    "remove_orphans",
    "table_health",
]


def maintain(
    db: Engine,
    catalog: Catalog,
    table_identifier: str,
    *,
    lease_seconds: int,
    retention_seconds: int = DEFAULT_RETENTION_SECONDS,
    replace_window_seconds: int = DEFAULT_REPLACE_WINDOW_SECONDS,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Compact, expire, remove orphans (in that order: expiry makes compaction's inputs orphans)."""
    check_retention(retention_seconds, lease_seconds)
    bounds = LockBounds.for_lease(lease_seconds)
    started = time.monotonic()
    report: dict[str, Any] = {"table": table_identifier, "dry_run": dry_run}
    compaction = compact(
        db, catalog, table_identifier, bounds=bounds, replace_window_seconds=replace_window_seconds, dry_run=dry_run
    )
    report["compaction"] = vars(compaction) | {"seconds": round(time.monotonic() - started, 3)}
    now = now or dt.datetime.now(dt.UTC)
    keep_since = protected_since(now, retention_seconds, processing_first_claims(db, table_identifier))
    t = time.monotonic()
    report["expiry"] = expire_snapshots(
        db, catalog, table_identifier, keep_since=keep_since, bounds=bounds, dry_run=dry_run
    ) | {"seconds": round(time.monotonic() - t, 3)}
    t = time.monotonic()
    report["orphans"] = remove_orphans(catalog, table_identifier, older_than=keep_since, dry_run=dry_run) | {
        "seconds": round(time.monotonic() - t, 3)
    }
    report["health"] = table_health(load(catalog, table_identifier))
    report["seconds"] = round(time.monotonic() - started, 3)
    return report
