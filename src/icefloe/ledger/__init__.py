"""The ledger: every file icefloe has seen, in PostgreSQL, and the SQL that decides its fate.

- :mod:`~icefloe.ledger.records` — what a listing page, a claim and a reconciliation hand around;
- :mod:`~icefloe.ledger.protocol` — the statements of the exactly-once protocol (upsert a listing
  page, claim with ``SKIP LOCKED``, heartbeat, per-table lock, fencing, SUCCESS/FAILED/release,
  expired leases), each with the invariant it keeps;
- :mod:`~icefloe.ledger.listing` — the incremental listing's watermarks and last full listings;
- :mod:`~icefloe.ledger.queries` — read-only queries for the CLI, the API and metrics;
- :mod:`~icefloe.ledger.connection` — the engine, whose outages raise ``LedgerUnavailableError``.

Callers use ``ledger.claim_batch(conn, …)`` etc.; the names are re-exported here.
"""

from icefloe.ledger.connection import connect, describe, is_outage, translate_connection_errors
from icefloe.ledger.events import EventObject, upsert_event_page
from icefloe.ledger.listing import (
    ListingState,
    advance_watermark,
    database_now,
    listing_state,
    record_full_listing,
    reset_listing_state,
)
from icefloe.ledger.protocol import (
    any_expired_lease,
    claim_batch,
    claimable_condition,
    files_still_owned,
    heartbeat,
    lock_expired_leases,
    lock_table,
    make_retryable,
    mark_failed,
    mark_succeeded,
    reconcile_committed,
    reconcile_lost,
    release,
    upsert_listing_page,
)
from icefloe.ledger.queries import (
    attempts,
    count_claimable,
    empty_files_of_run,
    files_by_status,
    find_file,
    get_file,
    hourly_totals,
    lag_by_ingestion,
    last_runs,
    list_files,
    queue_depths,
    recent_alerts_by_ingestion,
    retry_backlog,
    run_in_flight,
    run_needing_help,
    status_counts,
    status_counts_by_ingestion,
)
from icefloe.ledger.records import Batch, ClaimedFile, ExpiredFile, FileOutcome, ListedObject, LockBounds, PageCounts

__all__ = [
    "Batch",
    "ClaimedFile",
    "EventObject",
    "ExpiredFile",
    "FileOutcome",
    "ListedObject",
    "ListingState",
    "LockBounds",
    "PageCounts",
    "advance_watermark",
    "any_expired_lease",
    "attempts",
    "claim_batch",
    "claimable_condition",
    "connect",
    "count_claimable",
    "database_now",
    "describe",
    "empty_files_of_run",
    "files_by_status",
    "files_still_owned",
    "find_file",
    "get_file",
    "heartbeat",
    "hourly_totals",
    "is_outage",
    "lag_by_ingestion",
    "last_runs",
    "list_files",
    "listing_state",
    "lock_expired_leases",
    "lock_table",
    "make_retryable",
    "mark_failed",
    "mark_succeeded",
    "queue_depths",
    "recent_alerts_by_ingestion",
    "reconcile_committed",
    "reconcile_lost",
    "record_full_listing",
    "release",
    "reset_listing_state",
    "retry_backlog",
    "run_in_flight",
    "run_needing_help",
    "status_counts",
    "status_counts_by_ingestion",
    "translate_connection_errors",
    "upsert_event_page",
    "upsert_listing_page",
]
