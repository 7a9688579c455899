"""The commit protocol's pure decisions and the engine registry, without a database."""

from __future__ import annotations

import datetime as dt
import sys
import uuid

import pytest

from icefloe import commit, engines, models
from icefloe.errors import ConfigurationError
from icefloe.ledger import ClaimedFile, ExpiredFile, FileOutcome, LockBounds

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _outcome(file_id: int, *batch_ids: uuid.UUID, version: int = 1, path: str | None = None) -> FileOutcome:
    file = ClaimedFile(file_id, path or f"s3://b/{file_id}", 1, "e", version, 1, 0, batch_ids, T0)
    return FileOutcome(file, 1, 1, 1)


def test_landed_batches_cover_files_by_any_batch_that_ever_held_them() -> None:
    ours, old, unrelated = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    a, b, c = _outcome(1), _outcome(2, old), _outcome(3, unrelated)
    by_snapshot, rest = commit.split_landed([a, b, c], ours, {ours: 10, old: 20})
    # Every file of this batch carries our batch id: ours landed, so all are covered, each by
    # the first batch id found among those that held it (the older one for b).
    assert by_snapshot == {10: [a, c], 20: [b]}
    assert rest == []
    by_snapshot, rest = commit.split_landed([a, b, c], ours, {old: 20})
    assert by_snapshot == {20: [b]} and rest == [a, c]


def test_expired_leases_split_into_committed_and_lost() -> None:
    landed_batch, lost_batch = uuid.uuid4(), uuid.uuid4()
    committed = ExpiredFile(1, "s3://b/1", 3, 0, (lost_batch, landed_batch), T0, run_id=7)
    lost = ExpiredFile(2, "s3://b/2", 3, 0, (lost_batch,), T0, run_id=7)
    assert commit.split_expired([committed, lost], {landed_batch: 99}) == ([(committed, 99)], [lost])
    assert commit.split_expired([committed, lost], {}) == ([], [committed, lost])


def test_search_starts_before_the_first_claim_by_the_skew_margin() -> None:
    later = T0 + dt.timedelta(hours=1)
    since = commit.search_since_ms([later, None, T0])
    assert since == int((T0 - commit.CLOCK_SKEW_MARGIN).timestamp() * 1000)
    assert commit.search_since_ms([None]) == 0


def test_only_later_versions_replace_rows_and_only_under_replace() -> None:
    first, second = _outcome(1, version=1, path="s3://b/x"), _outcome(2, version=2, path="s3://b/y")
    assert commit.replaced_sources([first, second, second], replace_changed=True) == ["s3://b/y"]
    assert commit.replaced_sources([first, second], replace_changed=False) == []


def test_lock_bounds_follow_the_lease() -> None:
    assert LockBounds.for_lease(60) == LockBounds(wait_seconds=15, hold_seconds=30)
    assert LockBounds.for_lease(4) == LockBounds(wait_seconds=2, hold_seconds=5)  # floors for tiny leases
    for lease in (3, 10, 60, 600):
        bounds = LockBounds.for_lease(lease)
        assert bounds.hold_seconds < lease or bounds.hold_seconds == 5  # the lock goes before the lease


def test_engine_registry_matches_the_ledger_and_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(engines.ENGINES) == set(models.ENGINES)
    engines.require("arrow")
    with pytest.raises(ConfigurationError, match="unknown engine 'flink'"):
        engines.require("flink")
    monkeypatch.setitem(sys.modules, "pyspark.sql.connect.session", None)
    with pytest.raises(ConfigurationError) as info:
        engines.require("spark")
    assert "pip install 'icefloe[spark]'" in str(info.value) and "\n" not in str(info.value)
