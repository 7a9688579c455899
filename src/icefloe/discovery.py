"""Discovery: list the source page by page and stream each page into the ledger.

Memory holds one listing page (≤ 1,000 keys) at a time; the new/changed diff is computed by
PostgreSQL in :func:`icefloe.ledger.upsert_listing_page`. Patterns: :mod:`icefloe.globs`.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Engine

from icefloe import ledger
from icefloe.globs import compile_glob
from icefloe.ledger import ListedObject
from icefloe.partitions import relist_start
from icefloe.stores import Location, Store


def skip_reason(relative_key: str) -> str | None:
    """Why a listed key is recorded SKIPPED instead of ingested, or None.

    Folder markers and hidden or underscore files (``_SUCCESS``, ``.crc``, ``_temporary/``)
    are what Spark, Hadoop and many producers write beside their data.
    """
    if relative_key.endswith("/"):
        return "folder marker"
    if not relative_key.startswith((".", "_")) and "/." not in relative_key and "/_" not in relative_key:
        return None  # the common case, without splitting the key (once per listed key)
    for part in relative_key.split("/"):
        if part.startswith((".", "_")):
            return f"hidden or marker file ({part})"
    return None


@dataclass(frozen=True)
class Filter:
    """Which listed objects belong to an ingestion."""

    prefix: str
    pattern: str | None = None
    since: dt.datetime | None = None

    @property
    def accepts_all(self) -> bool:
        return self.pattern is None and self.since is None

    def accepts(self, key: str, modified_at: dt.datetime | None) -> bool:
        if self.since is not None and modified_at is not None and modified_at < self.since:
            return False
        if self.pattern is None:
            return True
        return compile_glob(self.pattern).match(key[len(self.prefix) :])


@dataclass(frozen=True)
class ListingPage:
    """One LIST response: the accepted objects, and the last key listed (accepted or not)."""

    objects: list[ListedObject]
    last_key: str | None


def listing_pages(
    store: Store, location: Location, flt: Filter, *, start_after: str | None = None
) -> Iterator[ListingPage]:
    """The store's listing page by page (one LIST request each), after ``start_after`` if given."""
    prefix_length = len(location.prefix)
    accepts_all = flt.accepts_all
    for entries in store.list_pages(location, start_after):
        accepted = [
            ListedObject(location.uri(e.key), e.size, e.modified_at, e.version, skip_reason(e.key[prefix_length:]))
            for e in entries
            if accepts_all or flt.accepts(e.key, e.modified_at)
        ]
        yield ListingPage(accepted, entries[-1].key if entries else None)


@dataclass(frozen=True)
class ListingPlan:
    """What one discovery lists: everything (``full``) or the keys after ``start_after``.

    ``missed_below``: in a full listing of an incremental ingestion, the key after which the
    incremental listing would have started; new or changed files at or below it are counted as
    missed by the incremental listing. ``missed_before``: in the reconciling listing of an
    events-mode ingestion, when the run began reading its queue; new or changed files modified
    before it are counted as missed by events.
    """

    full: bool
    start_after: str | None = None
    missed_below: str | None = None
    missed_before: dt.datetime | None = None


def plan_listing(
    *, mode: str, full_requested: bool, state: ledger.ListingState, prefix: str, lookback_seconds: int | None
) -> ListingPlan:
    """Decide how this run lists (pure): ``full`` mode always lists everything; ``incremental``
    lists after the watermark (moved back by the lookback), except on the first listing, when a
    full listing is due (``--full-listing-every``) or requested (``--full-listing``)."""
    if mode == "full" or state.watermark is None:
        return ListingPlan(full=True)
    start = state.watermark
    if lookback_seconds is not None:
        start = relist_start(state.watermark, prefix, lookback_seconds)
    if full_requested or state.full_listing_due:
        return ListingPlan(full=True, missed_below=start)
    return ListingPlan(full=False, start_after=start)


@dataclass
class DiscoveryCounts:
    listed: int = 0
    new: int = 0
    changed: int = 0
    skipped: int = 0
    list_requests: int = 0
    missed: int = 0
    missed_by_events: int = 0


_DONE = object()


def _prefetch(pages: Iterator[ListingPage], stop: threading.Event, depth: int = 2) -> Iterator[ListingPage]:
    """Iterate ``pages`` in a thread, ``depth`` pages ahead: the next LIST request is in flight while
    the caller records the last page, so a no-op discovery takes about the LIST time, not LIST + ledger."""
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in pages:
                if not put(page):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the caller, raised there
            put(exc)

    thread = threading.Thread(target=produce, name="listing", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, ListingPage)
            yield item
    finally:
        stop.set()
        thread.join()


def discover(
    engine: Engine,
    store: Store,
    *,
    ingestion_id: int,
    location: Location,
    flt: Filter,
    plan: ListingPlan | None = None,
    on_page: Callable[[DiscoveryCounts], None] | None = None,
) -> DiscoveryCounts:
    """List the source as ``plan`` says and upsert every page into the ledger, one statement per
    page that also advances the listing root's watermark to the page's last key."""
    plan = plan or ListingPlan(full=True)
    root = location.root
    missed_below = location.uri(plan.missed_below) if plan.missed_below is not None else None
    counts = DiscoveryCounts()
    stop = threading.Event()
    # One connection for the listing, each page one autocommitted statement: a pooled checkout
    # (with its ping), BEGIN and COMMIT per page cost more Python, on the thread that competes
    # with the listing for the GIL, than the page's upsert itself.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        started_at = ledger.database_now(conn) if plan.full else None
        for page in _prefetch(listing_pages(store, location, flt, start_after=plan.start_after), stop):
            counts.list_requests += 1
            page_counts = ledger.upsert_listing_page(
                conn,
                ingestion_id,
                page.objects,
                missed_below=missed_below,
                missed_before=plan.missed_before,
                watermark=(root, page.last_key),
            )
            counts.new += page_counts.new
            counts.changed += page_counts.changed
            counts.skipped += page_counts.skipped
            counts.missed += page_counts.missed
            counts.missed_by_events += page_counts.missed_by_events
            counts.listed += len(page.objects)
            if on_page is not None:
                on_page(counts)
        if started_at is not None:
            ledger.record_full_listing(conn, ingestion_id, root, started_at)
    return counts
