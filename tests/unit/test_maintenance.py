"""Maintenance's pure decisions: which files are packed together, what the retention may be."""

from __future__ import annotations

import datetime as dt

import pytest

from icefloe.errors import ConfigurationError
from icefloe.maintenance import check_retention, plan_bins, protected_since


def test_small_files_are_packed_in_order_into_bins_and_lone_files_left() -> None:
    sizes = [("d", 40), ("a", 10), ("big", 500), ("b", 10), ("c", 30), ("e", 5)]
    assert plan_bins(sizes, small_bytes=100, bin_bytes=50) == [["a", "b", "c"], ["d", "e"]]
    assert plan_bins([("a", 10), ("big", 500)], small_bytes=100, bin_bytes=50) == []


def test_retention_must_cover_the_lease_plus_a_day() -> None:
    check_retention(7 * 86400, 60)
    check_retention(86400 + 60, 60)
    with pytest.raises(ConfigurationError, match=r"shorter than the recovery window \(lease 1m \+ 1d = 1d1m\)"):
        check_retention(86400, 60)


def test_nothing_after_the_first_claim_of_an_unsettled_file_is_expired() -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert protected_since(now, 7 * 86400, []) == now - dt.timedelta(days=7)
    claim = now - dt.timedelta(days=30)
    assert protected_since(now, 7 * 86400, [claim]) == claim - dt.timedelta(minutes=10)
