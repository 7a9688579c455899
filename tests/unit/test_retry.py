import random

from icefloe.retry import backoff_seconds


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_seconds(n, base=10, cap=100, rng=rng) for n in range(1, 8)]
    # Attempt n waits between half and all of min(cap, base * 2^(n-1)).
    for n, delay in enumerate(delays, start=1):
        full = min(100, 10 * 2 ** (n - 1))
        assert full / 2 <= delay <= full
    assert max(delays) <= 100
    assert backoff_seconds(0) == 0


def test_jitter_spreads_retries_of_files_failed_together() -> None:
    rng = random.Random(1)
    delays = {round(backoff_seconds(3, rng=rng), 3) for _ in range(50)}
    assert len(delays) > 40
