import dataclasses
import random

from icefloe import retry
from icefloe.retry import Backoff


def test_file_retry_grows_exponentially_with_equal_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    policy = Backoff(base=10, cap=100, jitter="equal")
    delays = [policy.delay(n, rng) for n in range(1, 8)]
    # Attempt n waits between half and all of min(cap, base * 2^(n-1)).
    for n, delay in enumerate(delays, start=1):
        full = min(100, 10 * 2 ** (n - 1))
        assert full / 2 <= delay <= full
    assert max(delays) <= 100
    assert policy.delay(0) == 0
    # The README's promise: 30 s, 60 s, … capped at 1 h.
    assert [retry.FILE_RETRY.exponential(n) for n in (1, 2, 8, 20)] == [30, 60, 3600, 3600]


def test_equal_jitter_spreads_retries_of_files_failed_together() -> None:
    rng = random.Random(1)
    delays = {round(retry.FILE_RETRY.delay(3, rng), 3) for _ in range(50)}
    assert len(delays) > 40
    assert all(60 <= d <= 120 for d in delays)


def test_commit_backoff_is_proportional_and_capped() -> None:
    rng = random.Random(3)
    for attempt in range(1, 12):
        full = min(5.0, 0.1 * 2 ** (attempt - 1))
        assert full * 0.5 <= retry.COMMIT.delay(attempt, rng) <= full


def test_fixed_policies() -> None:
    assert [retry.IN_PLACE.delay(n) for n in (1, 2)] == [1.0, 2.0]
    assert [retry.LEDGER_WAIT.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert [retry.WEBHOOK_IN_PLACE.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 1.0]


def test_alert_delivery_schedule_doubles_then_caps() -> None:
    assert retry.ALERT_DELIVERY.schedule(5) == [0, 60, 180, 420, 900]
    assert dataclasses.replace(retry.ALERT_DELIVERY, cap=100).schedule(4) == [0, 60, 160, 260]
    assert retry.ALERT_DELIVERY.schedule(0) == []
