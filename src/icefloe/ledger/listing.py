"""Listing state of the incremental listing: one watermark per listing root, and the last full listing.

The watermark is the greatest key listed *and recorded*: it advances in the transaction that
upserts its page, so a run that dies mid-listing resumes after the last page it recorded. Keys are
compared in byte order (``COLLATE "C"``), the order in which S3 lists them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class ListingState:
    """Where an incremental listing of ``root`` starts, and whether a full listing is due."""

    watermark: str | None
    last_full_listing_at: dt.datetime | None
    full_listing_due: bool


def listing_state(conn: Connection, ingestion_id: int, root: str, full_every_seconds: int) -> ListingState:
    """The root's watermark and last full listing; a full listing is due when none was ever made or
    the last one is ``full_every_seconds`` old (on the database's clock)."""
    row = conn.execute(
        text(
            "SELECT watermark, last_full_listing_at, "
            "coalesce(last_full_listing_at <= now() - make_interval(secs => :every), true) AS due "
            "FROM listing_watermarks WHERE ingestion_id = :i AND root = :root"
        ),
        {"i": ingestion_id, "root": root, "every": full_every_seconds},
    ).first()
    if row is None:
        return ListingState(None, None, True)
    return ListingState(row.watermark, row.last_full_listing_at, bool(row.due))


# Moves the root's watermark up to :watermark, never down (concurrent runs may list in any order).
# Also a CTE of the page upsert (protocol.upsert_listing_page), so the two commit as one statement.
ADVANCE_WATERMARK_SQL = """
            INSERT INTO listing_watermarks (ingestion_id, root, watermark)
            SELECT :ingestion_id, CAST(:root AS text), CAST(:watermark AS text)
            WHERE CAST(:watermark AS text) IS NOT NULL
            ON CONFLICT (ingestion_id, root) DO UPDATE SET
                watermark = GREATEST(listing_watermarks.watermark COLLATE "C", EXCLUDED.watermark),
                updated_at = now()
            WHERE listing_watermarks.watermark IS NULL
               OR listing_watermarks.watermark COLLATE "C" < EXCLUDED.watermark"""


def advance_watermark(conn: Connection, ingestion_id: int, root: str, key: str) -> None:
    """Move the root's watermark up to ``key`` (never down).

    Call it in the transaction that records the page ``key`` ends, so the watermark never passes a
    key that is not in the ledger.
    """
    conn.execute(text(ADVANCE_WATERMARK_SQL), {"ingestion_id": ingestion_id, "root": root, "watermark": key})


def record_full_listing(conn: Connection, ingestion_id: int, root: str, started_at: dt.datetime) -> None:
    """A full listing of ``root`` that started at ``started_at`` completed: the next is due from then."""
    conn.execute(
        text(
            """
            INSERT INTO listing_watermarks (ingestion_id, root, last_full_listing_at) VALUES (:i, :root, :at)
            ON CONFLICT (ingestion_id, root) DO UPDATE SET
                last_full_listing_at = GREATEST(listing_watermarks.last_full_listing_at, EXCLUDED.last_full_listing_at),
                updated_at = now()
            """
        ),
        {"i": ingestion_id, "root": root, "at": started_at},
    )


def reset_listing_state(conn: Connection, ingestion_id: int) -> None:
    """Forget the ingestion's watermarks: after its selection changed (pattern, since, listing mode),
    keys below a watermark may newly belong to it, so the next run lists everything."""
    conn.execute(text("DELETE FROM listing_watermarks WHERE ingestion_id = :i"), {"i": ingestion_id})


def database_now(conn: Connection) -> dt.datetime:
    """The database's clock, which every time decision of the ledger uses."""
    value: dt.datetime = conn.execute(text("SELECT now()")).scalar_one()
    return value
