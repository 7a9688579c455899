"""The incremental listing's pure decisions: where a lookback starts, and how a run lists."""

from __future__ import annotations

import pytest

from icefloe.discovery import ListingPlan, plan_listing
from icefloe.ledger import ListingState
from icefloe.partitions import relist_start

DAY = 86400


@pytest.mark.parametrize(
    ("watermark", "lookback", "expected"),
    [
        ("p/dt=2025-01-03/f3c1.jsonl", 2 * DAY, "p/dt=2025-01-01/"),
        ("p/date=2025-03-01/x.csv", DAY, "p/date=2025-02-28/"),
        ("p/dt=2025-01-03/hour=07/x", 3600, "p/dt=2025-01-03/"),  # under a day: the watermark's own day
        ("p/year=2025/month=01/day=01/x", DAY, "p/year=2024/month=12/day=31/"),
        ("p/2024/03/01/x", DAY, "p/2024/02/29/"),
        ("p/v1/2025/01/10/x", 2 * DAY, "p/v1/2025/01/08/"),  # a fixed path before the partition stays
        ("p/20250103-x.jsonl", DAY, "p/20250103-x.jsonl"),  # no date partition: the plain watermark
        ("p/2025/13/45/x", DAY, "p/2025/13/45/x"),  # digits, not a date
        ("p/dt=2025-1-3/x", DAY, "p/dt=2025-1-3/x"),  # not zero-padded: lexical order is not date order
    ],
)
def test_relist_start(watermark: str, lookback: int, expected: str) -> None:
    start = relist_start(watermark, "p/", lookback)
    assert start == expected
    assert start <= watermark  # a superset of what the plain watermark lists


STATE = ListingState(watermark="p/dt=2025-01-03/b", last_full_listing_at=None, full_listing_due=False)


def test_plan_full_mode_always_lists_everything() -> None:
    plan = plan_listing(mode="full", full_requested=False, state=STATE, prefix="p/", lookback_seconds=None)
    assert plan == ListingPlan(full=True)


def test_plan_incremental_lists_after_the_watermark() -> None:
    plan = plan_listing(mode="incremental", full_requested=False, state=STATE, prefix="p/", lookback_seconds=None)
    assert plan == ListingPlan(full=False, start_after="p/dt=2025-01-03/b")
    lookback = plan_listing(mode="incremental", full_requested=False, state=STATE, prefix="p/", lookback_seconds=DAY)
    assert lookback == ListingPlan(full=False, start_after="p/dt=2025-01-02/")


def test_plan_first_listing_is_full_and_counts_nothing_missed() -> None:
    first = ListingState(watermark=None, last_full_listing_at=None, full_listing_due=True)
    plan = plan_listing(mode="incremental", full_requested=False, state=first, prefix="p/", lookback_seconds=DAY)
    assert plan == ListingPlan(full=True)


@pytest.mark.parametrize(("requested", "due"), [(True, False), (False, True)])
def test_plan_reconciling_full_listing_counts_below_the_incremental_start(requested: bool, due: bool) -> None:
    state = ListingState(watermark=STATE.watermark, last_full_listing_at=None, full_listing_due=due)
    plan = plan_listing(mode="incremental", full_requested=requested, state=state, prefix="p/", lookback_seconds=DAY)
    assert plan == ListingPlan(full=True, missed_below="p/dt=2025-01-02/")
