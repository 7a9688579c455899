"""The ledger side of event-driven discovery: one page of S3 notifications upserted as a listing
page would be, except that an older notification never overwrites a newer version."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from icefloe.ledger.protocol import NEW_VERSION_SET
from icefloe.ledger.records import ListedObject, PageCounts


@dataclass(frozen=True)
class EventObject:
    """An object a notification says was created: what a listing would have said, plus the
    notification's ``sequencer`` (S3's per-key order of events; None when the producer gives none)."""

    listed: ListedObject
    sequencer: str | None


# Is the notification (EXCLUDED) newer than what the row records? By S3's sequencer when both have
# one (hex strings compared after right-padding the shorter with zeros, as AWS documents); else by
# time, to the second: a listing's LastModified is truncated to seconds, a notification's eventTime
# is not, and an old notification must not pass for newer within the second it was listed in.
_NEWER = """
    CASE WHEN files.event_sequencer IS NOT NULL AND EXCLUDED.event_sequencer IS NOT NULL THEN
        rpad(EXCLUDED.event_sequencer, greatest(length(EXCLUDED.event_sequencer), length(files.event_sequencer)), '0')
            COLLATE "C"
        > rpad(files.event_sequencer, greatest(length(EXCLUDED.event_sequencer), length(files.event_sequencer)), '0')
    ELSE files.modified_at IS NULL OR EXCLUDED.modified_at IS NULL
        OR date_trunc('second', EXCLUDED.modified_at) > files.modified_at
    END"""

_UPSERT_EVENTS = text(
    """
    WITH page AS (
        SELECT e->>0 AS file_path, CAST(e->>1 AS bigint) AS size, CAST(e->>2 AS timestamptz) AS modified_at,
               e->>3 AS etag, e->>4 AS skip_reason, e->>5 AS sequencer
        FROM json_array_elements(CAST(:page AS json)) AS e
    ), upserted AS (
        INSERT INTO files (ingestion_id, file_path, size, modified_at, etag, status, error_message, event_sequencer)
        SELECT :ingestion_id, file_path, size, modified_at, etag,
               CASE WHEN skip_reason IS NULL THEN 'DISCOVERED' ELSE 'SKIPPED' END, skip_reason, sequencer
        FROM page
        ON CONFLICT (ingestion_id, file_path) DO UPDATE SET
"""
    + NEW_VERSION_SET
    + """,
            event_sequencer = EXCLUDED.event_sequencer
        WHERE files.etag IS DISTINCT FROM EXCLUDED.etag AND """
    + _NEWER
    + """
        RETURNING (xmax = 0) AS inserted, status
    )
    SELECT count(*) FILTER (WHERE inserted AND status <> 'SKIPPED') AS new,
           count(*) FILTER (WHERE NOT inserted AND status <> 'SKIPPED') AS changed,
           count(*) FILTER (WHERE status = 'SKIPPED') AS skipped
    FROM upserted
    """
)


def upsert_event_page(conn: Connection, ingestion_id: int, page: Sequence[EventObject]) -> PageCounts:
    """Record the objects of some notifications in one statement (one row per key: see
    :func:`icefloe.events.newest_per_key`).

    Invariant: as :func:`icefloe.ledger.upsert_listing_page` — an unchanged ETag is not touched (a
    redelivered or duplicate notification does nothing), a changed one starts a new version — and
    a notification older than the version recorded (out of order) is ignored.
    """
    if not page:
        return PageCounts(0, 0, 0)
    rows = [
        (
            e.listed.file_path,
            e.listed.size,
            e.listed.modified_at.isoformat() if e.listed.modified_at else None,
            e.listed.etag,
            e.listed.skip_reason,
            e.sequencer,
        )
        for e in page
    ]
    row = conn.execute(_UPSERT_EVENTS, {"ingestion_id": ingestion_id, "page": json.dumps(rows)}).one()
    return PageCounts(new=row.new, changed=row.changed, skipped=row.skipped)
